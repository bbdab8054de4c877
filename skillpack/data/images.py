"""The one image decoding of the project, in prepare and in the inference service: bytes or
a path -> uint8 size x size x channels. A leaf module (numpy and PIL only), so that the
serving image imports it without the data package's pandas and scikit-learn."""
from __future__ import annotations

import threading

import numpy as np

DEFAULT_MAX_PIXELS = 40_000_000   # data.max_pixels' default: a 36-megapixel camera photo fits
# The formats the docs list, by Pillow's format ids; no other plugin ever sees the bytes (a file
# named .png that holds PostScript would otherwise reach the EPS plugin, which runs Ghostscript).
DECODED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


_PIL_LIMIT_LOCK = threading.Lock()


class ImageTooLarge(ValueError):
    pass


class NotAnImage(ValueError):
    """Bytes that none of DECODED_FORMATS reads."""


class CorruptImage(ValueError):
    """Bytes of an allowed format that do not decode: empty, truncated or corrupt data."""


def _scaled_to_8bit(img):
    """16-bit, 32-bit integer and float images -> 8-bit grey, scaled (never clipped at 255):
    16-bit v -> round(v * 255 / 65535); 32-bit integers are read as 16-bit values (clipped to
    0..65535); floats are taken as 0..1 when no value is above 1 (x 255), else as 0..255
    (clipped), NaN -> 0. Row blocks bound the temporary memory."""
    from PIL import Image

    arr = np.asarray(img)
    out = np.empty(arr.shape[:2], dtype=np.uint8)
    rows = max(1, (1 << 20) // max(arr.shape[1], 1))
    if img.mode == "F":
        finite_max = np.nanmax(np.where(np.isfinite(arr), arr, -np.inf)) if arr.size else 0.0
        scale = 255.0 if finite_max <= 1.0 else 1.0
        for r in range(0, arr.shape[0], rows):
            block = np.nan_to_num(arr[r:r + rows].astype(np.float32) * scale, nan=0.0, posinf=255.0, neginf=0.0)
            out[r:r + rows] = np.rint(np.clip(block, 0.0, 255.0))
    else:
        for r in range(0, arr.shape[0], rows):
            block = np.clip(arr[r:r + rows], 0, 65535).astype(np.uint32)
            out[r:r + rows] = (block * 255 + 32767) // 65535
    return Image.fromarray(out, "L")


def _without_alpha(img):
    """Composite an image with alpha onto black (what a transparent pixel is here)."""
    from PIL import Image

    base = Image.new("L" if img.mode in ("LA", "La") else "RGB", img.size, 0)
    if img.mode in ("La", "RGBa"):
        img = img.convert("LA" if img.mode == "La" else "RGBA")
    base.paste(img.convert("LA" if base.mode == "L" else "RGBA"), (0, 0), img.getchannel("A"))
    return base


def normalise_mode(img, channels: int):
    """Any PIL mode -> "L" (channels 1) or "RGB" (channels 3), as the README documents:
    16-bit / 32-bit / float scaled to 8 bits; "1" -> 0 / 255; palette -> its colours (with
    alpha when the palette has a transparent entry); alpha composited onto black; CMYK,
    YCbCr, LAB, HSV -> RGB by PIL's conversion (no ICC colour management); RGB -> L by
    ITU-R 601-2 luma, L -> RGB by repeating the grey."""
    mode = img.mode
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        img = _scaled_to_8bit(img)
    elif mode == "1":
        img = img.convert("L")
    elif mode in ("P", "PA"):
        img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
    elif mode not in ("L", "RGB", "LA", "La", "RGBA", "RGBa"):
        img = img.convert("RGB")
    if img.mode in ("LA", "La", "RGBA", "RGBa"):
        img = _without_alpha(img)
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def _open_within(source):
    """Image.open limited to DECODED_FORMATS and without Pillow's own bomb guard (an error above
    twice Image.MAX_IMAGE_PIXELS, about 179 Mpx, whatever data.max_pixels says): opening reads
    the header only, and decode_image applies max_pixels to it before any pixel is decoded.
    Pillow reads its guard from a module global; a lock keeps it on for every other open."""
    from PIL import Image

    with _PIL_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(source, formats=DECODED_FORMATS)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def decode_image(source, size: int, channels: int, max_pixels: int | None = None) -> np.ndarray:
    """The one decoding every image goes through, in prepare and in the inference service: a
    path or a binary file object -> uint8 size x size x channels. First frame; `max_pixels`
    refuses larger images from their header, before any pixel is decoded (decompression
    bombs); JPEGs much larger than `size` are decoded at a reduced scale (libjpeg's DCT
    scaling, memory / 64 at 1/8); EXIF orientation applied; modes converted by
    `normalise_mode`; resized bilinear to size x size."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    try:
        opened = _open_within(source)
    except UnidentifiedImageError:
        raise NotAnImage(f"not a {'/'.join(DECODED_FORMATS)} image") from None
    with opened as img:
        width, height = img.size
        if width * height > limit:
            raise ImageTooLarge(f"{width}x{height} = {width * height:,} pixels, over the limit of {limit:,}")
        img.seek(0)  # first frame of an animated gif / multi-page tiff
        if img.format == "JPEG":
            img.draft(None, (2 * size, 2 * size))
        img.load()
        try:
            ImageOps.exif_transpose(img, in_place=True)
        except Exception:  # a malformed EXIF block: the pixels are still good, shown as stored
            pass
        img = normalise_mode(img, channels)
        img = img.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def decode_bytes(data: bytes, size: int, channels: int, max_pixels: int | None = None) -> np.ndarray:
    """decode_image of a file's bytes, as the inference service and `skillpack predict` read one
    image: every failure is one of ImageTooLarge, NotAnImage or CorruptImage, whose message says
    why in one line (Pillow raises several types for truncated or corrupt data)."""
    import io

    if not data:
        raise CorruptImage("empty image")
    try:
        return decode_image(io.BytesIO(data), size, channels, max_pixels=max_pixels)
    except (ImageTooLarge, NotAnImage):
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise CorruptImage(f"corrupt image ({type(err).__name__}: {err})") from None


# ---------------------------------------------------------------- ImageFolder
