"""Photos: HEIC/HEIF decoded through pillow-heif, and EXIF date, camera and GPS stored as metadata.

The files are real: JPEG written by Pillow and HEIC written by pillow-heif (libheif + x265),
each with an EXIF block built with Pillow's ``Image.Exif``.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image
from PIL.ExifTags import GPS, IFD, Base

from indexer import Catalog
from indexer.jobs import JobManager, JobSettings
from indexer.photos import photo_metadata
from indexer.redis_queue import RedisQueue
from indexer.sources import IMAGE_EXTENSIONS
from indexer.worker import Worker, WorkerSettings
from models.preprocess import load_image

SETTINGS = JobSettings(chunk_size=4, decode_workers=2, device="cpu")


def exif_block(*, taken="2024:05:01 14:03:22", offset="+02:00", make="Apple", model="iPhone 15 Pro",
               lat=((48, 1), (51, 1), (2950, 100)), lat_ref="N", lon=((2, 1), (17, 1), (4020, 100)), lon_ref="W",
               altitude=(355, 10), below_sea=False, orientation=None) -> bytes:
    exif = Image.Exif()
    if make is not None:
        exif[Base.Make] = make
    if model is not None:
        exif[Base.Model] = model
    if orientation is not None:
        exif[Base.Orientation] = orientation
    details = exif.get_ifd(IFD.Exif)
    if taken is not None:
        details[Base.DateTimeOriginal] = taken
    if offset is not None:
        details[Base.OffsetTimeOriginal] = offset
    gps = exif.get_ifd(IFD.GPSInfo)
    from PIL.TiffImagePlugin import IFDRational

    def rational(pair):
        return IFDRational(*pair)

    if lat is not None:
        gps[GPS.GPSLatitudeRef], gps[GPS.GPSLatitude] = lat_ref, tuple(rational(p) for p in lat)
    if lon is not None:
        gps[GPS.GPSLongitudeRef], gps[GPS.GPSLongitude] = lon_ref, tuple(rational(p) for p in lon)
    if altitude is not None:
        gps[GPS.GPSAltitude], gps[GPS.GPSAltitudeRef] = rational(altitude), b"\x01" if below_sea else b"\x00"
    return exif.tobytes()


def photo(fmt: str, exif: bytes | None = None, size=(64, 48), seed=0) -> bytes:
    """A photo-like image (two halves of different colours plus noise) as JPEG or HEIC bytes."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 40, (size[1], size[0], 3)).astype(np.uint8)
    pixels[:, : size[0] // 2] += np.array([200, 0, 0], np.uint8)   # left half red
    pixels[:, size[0] // 2:] += np.array([0, 0, 200], np.uint8)    # right half blue
    out = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    Image.fromarray(pixels).save(out, format={"jpeg": "JPEG", "heic": "HEIF"}[fmt], quality=95, **kwargs)
    return out.getvalue()


# 48 deg 51' 29.5" N, 2 deg 17' 40.2" W, by hand: 48 + 51/60 + 29.5/3600 and 2 + 17/60 + 40.2/3600
EXPECTED = {"taken_at": "2024-05-01T14:03:22+02:00", "camera_make": "Apple", "camera_model": "iPhone 15 Pro",
            "gps_latitude": 48.8581944, "gps_longitude": -2.2945, "gps_altitude": 35.5}


@pytest.mark.parametrize("fmt", ["jpeg", "heic"])
def test_exif_date_camera_and_position_of_real_files(fmt):
    image = load_image(photo(fmt, exif_block()))
    assert image.size == (64, 48)
    assert photo_metadata(image) == {**EXPECTED, "width": 64, "height": 48}


def test_heic_decodes_upright_like_the_same_photo_as_jpeg():
    """Orientation 6 (rotate 90 degrees clockwise to view): both formats come out the same way up."""
    decoded = {fmt: np.asarray(load_image(photo(fmt, exif_block(orientation=6))).convert("RGB"), np.float32)
               for fmt in ("jpeg", "heic")}
    for fmt, pixels in decoded.items():
        assert pixels.shape == (64, 48, 3), fmt  # portrait now
        top, bottom = pixels[:32].mean(axis=(0, 1)), pixels[32:].mean(axis=(0, 1))
        # the left (red) half of the stored landscape is the top after a clockwise quarter turn
        assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0], (fmt, top, bottom)
    assert np.abs(decoded["jpeg"] - decoded["heic"]).mean() < 12  # lossy both, the same picture


def test_malformed_exif_values_are_dropped_not_stored():
    broken = exif_block(taken="0000:00:00 00:00:00", offset="+99:00", make="  \x00 ", lat=((91, 1), (0, 1), (0, 1)),
                        altitude=(10, 0))
    found = photo_metadata(load_image(photo("jpeg", broken)))
    assert found == {"width": 64, "height": 48, "camera_model": "iPhone 15 Pro"}  # no half position either
    found = photo_metadata(load_image(photo("jpeg", exif_block(offset="bogus", lon_ref="X", below_sea=True))))
    assert found["taken_at"] == "2024-05-01T14:03:22" and "gps_latitude" not in found
    assert found["gps_altitude"] == -35.5
    assert photo_metadata(load_image(photo("jpeg"))) == {"width": 64, "height": 48}  # no EXIF at all


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "iphone.heic").write_bytes(photo("heic", exif_block(), seed=1))
    canon = exif_block(make="Canon", model="EOS R5", taken="2023:12:24 09:00:00", offset=None, lat=None, altitude=None)
    (folder / "canon.JPG").write_bytes(photo("jpeg", canon, seed=2))
    (folder / "scan.heif").write_bytes(photo("heic", seed=3))
    (folder / "plain.png").write_bytes(b"")  # an empty file fails, with its reason, as before
    return folder


def test_folder_job_indexes_heic_and_stores_exif_metadata(tmp_path, photos, encoder):
    assert {"heic", "heif"} <= IMAGE_EXTENSIONS
    manager = JobManager(tmp_path / "data", encoder=encoder, settings=SETTINGS)
    try:
        status = manager.wait(manager.submit(photos, "photos"), timeout=60)
        assert (status.state, status.total, status.done, status.failed) == ("completed", 4, 3, 1)
        index = manager.catalog().get("photos")
        assert index.get("iphone.heic").metadata == {"path": "iphone.heic", "width": 64, "height": 48, **EXPECTED}
        assert index.get("canon.JPG").metadata == {
            "path": "canon.JPG", "width": 64, "height": 48, "taken_at": "2023-12-24T09:00:00", "camera_make": "Canon",
            "camera_model": "EOS R5"}
        assert index.get("scan.heif").metadata == {"path": "scan.heif", "width": 64, "height": 48}
        # the HEIC item's vector is the encoder's for the decoded photo
        expected = encoder.encode_images([load_image(photos / "iphone.heic")]).mean[0]
        np.testing.assert_allclose(index.get("iphone.heic").mean, expected, atol=1e-5)
    finally:
        manager.close()


def test_a_manifest_column_wins_over_exif_and_workers_carry_exif_back(tmp_path, photos, encoder, redis_url):
    manifest = tmp_path / "photos.csv"
    manifest.write_text("id,image,camera_make\nphone,photos/iphone.heic,my phone\n")
    catalog = Catalog(tmp_path / "data")
    manager = JobManager(tmp_path / "data", catalog=catalog, encoder=encoder, redis_url=redis_url,
                         settings=JobSettings(chunk_size=4, namespace="photos", device="cpu"))
    stop = threading.Event()
    worker = Worker(RedisQueue.from_url(redis_url, "photos"), encoder, name="w",
                    settings=WorkerSettings(block_ms=50, heartbeat_s=0.5))
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        status = manager.wait(manager.submit(manifest, "manifest-photos"), timeout=60)
        assert (status.state, status.done) == ("completed", 1)
        metadata = catalog.get("manifest-photos").get("phone").metadata
        assert metadata["camera_make"] == "my phone"  # the manifest's column wins
        assert metadata["taken_at"] == EXPECTED["taken_at"] and metadata["gps_latitude"] == EXPECTED["gps_latitude"]
    finally:
        stop.set()
        thread.join(10)
        manager.close()
        catalog.close()
