// An image picker that works with a mouse (click or drag-and-drop), a keyboard (it is a real
// file input behind a label) and a phone (the camera roll opens), with a preview.

import { h, newId } from "./dom.js";

const ACCEPT = "image/png,image/jpeg,image/webp,image/gif,image/bmp";

export function imagePicker({ label, initial = null, onChange }) {
  const inputId = newId("file");
  const hintId = newId("file-hint");
  const input = h("input", {
    id: inputId,
    type: "file",
    accept: ACCEPT,
    class: "file-input",
    "aria-describedby": hintId,
  });
  const preview = h("img", { class: "preview", alt: "", hidden: true });
  const caption = h("span", { class: "drop-caption" }, "Drop an image here, or choose a file");
  const zone = h(
    "label",
    { for: inputId, class: "dropzone" },
    preview,
    h(
      "span",
      { class: "drop-text" },
      h("strong", {}, label),
      caption,
      h("span", { class: "hint", id: hintId }, "PNG, JPEG, WebP, GIF or BMP"),
    ),
  );
  let objectUrl = null;

  function show(file, name) {
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = file ? URL.createObjectURL(file) : null;
    preview.hidden = !file;
    if (file) {
      preview.src = objectUrl;
      preview.alt = `chosen image: ${name}`;
      caption.textContent = `${name} — drop or choose another to replace it`;
    }
  }

  input.addEventListener("change", () => {
    const file = input.files && input.files[0];
    if (!file) return;
    show(file, file.name);
    onChange(file);
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file =
      [...(event.dataTransfer?.files || [])].find((f) => f.type.startsWith("image/")) || event.dataTransfer?.files?.[0];
    if (!file) return;
    show(file, file.name);
    onChange(file);
  });

  if (initial) show(initial.file, initial.label);
  // set(): show an image chosen elsewhere (e.g. fetched from a collection) without firing onChange
  return { element: h("div", { class: "picker" }, input, zone), input, set: show };
}
