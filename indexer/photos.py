"""What a photo's EXIF says, as item metadata that filters can use.

Indexed images (folder and manifest jobs, shards, uploads) get these keys when the file's
EXIF has them; a key is absent rather than null when it does not:

============== ======================================================================================
key            value
============== ======================================================================================
``taken_at``   capture time, ISO-8601 text: ``2024-05-01T14:03:22`` (camera local time), with the
               UTC offset when the camera wrote one (``2024-05-01T14:03:22+02:00``). From
               DateTimeOriginal, else DateTimeDigitized, else DateTime. ISO-8601 text orders as
               the times do, so string range filters work on it.
``camera_make`` the maker as written by the camera (``Apple``, ``Canon``), trimmed
``camera_model`` the model (``iPhone 15 Pro``), trimmed
``gps_latitude`` decimal degrees, north positive (a JSON number, 7 decimals: ~1 cm)
``gps_longitude`` decimal degrees, east positive
``gps_altitude`` metres above sea level (negative below)
``width``,      pixel size as shown, i.e. after the EXIF orientation is applied
``height``
============== ======================================================================================

Malformed values (a date of ``0000:00:00``, a latitude of 91 degrees, a zero denominator) are
dropped, never stored. Metadata given with an item (a manifest's columns, an upload's form)
wins over these keys.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import datetime
from typing import Any

from PIL import Image
from PIL.ExifTags import GPS, IFD, Base

log = logging.getLogger(__name__)

PHOTO_KEYS = ("taken_at", "camera_make", "camera_model", "gps_latitude", "gps_longitude", "gps_altitude",
              "width", "height")
MAX_TEXT = 128  # characters kept of a maker or model string
_OFFSET = re.compile(r"^[+-](?:[01]\d|2[0-3]):[0-5]\d$")


def photo_metadata(image: Image.Image) -> dict[str, Any]:
    """The documented keys found in ``image`` (a decoded, upright PIL image), as JSON values."""
    found: dict[str, Any] = {"width": int(image.width), "height": int(image.height)}
    try:
        exif = image.getexif()
        details = exif.get_ifd(IFD.Exif)
        gps = exif.get_ifd(IFD.GPSInfo)
    except Exception as error:  # noqa: BLE001 - a broken EXIF block only costs its metadata
        log.debug("unreadable EXIF: %s", error)
        return found
    taken = _capture_time(details, exif)
    if taken is not None:
        found["taken_at"] = taken
    for key, tag in (("camera_make", Base.Make), ("camera_model", Base.Model)):
        text = _text(exif.get(tag))
        if text:
            found[key] = text
    found.update(_position(gps))
    return found


def _capture_time(details: Any, exif: Any) -> str | None:
    for value, offset in ((details.get(Base.DateTimeOriginal), details.get(Base.OffsetTimeOriginal)),
                          (details.get(Base.DateTimeDigitized), details.get(Base.OffsetTimeDigitized)),
                          (exif.get(Base.DateTime), details.get(Base.OffsetTime))):
        text = _text(value)
        if not text:
            continue
        try:
            moment = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
        except ValueError:
            continue  # "0000:00:00 00:00:00", blanks, other formats: no date rather than a wrong one
        stamp = moment.isoformat()
        offset = _text(offset)
        return stamp + offset if offset and _OFFSET.match(offset) else stamp
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = value.replace("\x00", "").strip()
    return text[:MAX_TEXT] or None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _degrees(parts: Any, ref: Any, negative: str, limit: float) -> float | None:
    """(degrees, minutes, seconds) rationals and an N/S or E/W reference -> signed decimal degrees."""
    if not isinstance(parts, (tuple, list)) or not 1 <= len(parts) <= 3:
        return None
    values = [_number(part) for part in parts]
    if any(v is None or v < 0 for v in values) or any(v >= 60 for v in values[1:]):
        return None
    degrees = sum(v / 60**i for i, v in enumerate(values))
    if degrees > limit:
        return None
    if _text(ref) is None or _text(ref).upper() not in ("N", "S", "E", "W"):
        return None
    return round(-degrees if _text(ref).upper() == negative else degrees, 7)


def _position(gps: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    latitude = _degrees(gps.get(GPS.GPSLatitude), gps.get(GPS.GPSLatitudeRef), "S", 90.0)
    longitude = _degrees(gps.get(GPS.GPSLongitude), gps.get(GPS.GPSLongitudeRef), "W", 180.0)
    if latitude is not None and longitude is not None:  # half a position is no position
        out["gps_latitude"], out["gps_longitude"] = latitude, longitude
    altitude = _number(gps.get(GPS.GPSAltitude))
    if altitude is not None and abs(altitude) < 100_000:
        below = gps.get(GPS.GPSAltitudeRef)
        below = below[0] if isinstance(below, bytes) and below else below
        out["gps_altitude"] = round(-altitude if below == 1 else altitude, 2)
    return out
