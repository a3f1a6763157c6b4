"""Textured scans: an OBJ's MTL and texture image (or a PLY's TextureFile), re-made from values.

Whitelist, never edited input: the image is decoded with Pillow and a fresh PNG or JPEG is
encoded from its pixels alone (an image rebuilt from the raw pixel buffer carries no EXIF, XMP,
ICC profile, text chunks, comments or thumbnails); the MTL is written by us with `newmtl texture`
and `map_Kd <our file name>` only. The input's file names are never reused (they can name a
patient): outputs are called `<stem>.mtl` and `<stem>.png` / `<stem>.jpg`.

Policy: a texture named by the mesh that is not among the files given (MTL or image missing)
is dropped with a warning (the geometry and UVs still load); an image that is there but cannot
be de-identified (not PNG or JPEG, corrupt, over Limits.max_texture_pixels) rejects the mesh.

Worst case: the pixel count is read from the image header and checked before any decoding;
decoding then holds width x height x 4 bytes plus the encoded copy (<= max_texture_pixels x 8).
"""

from __future__ import annotations

import io
import posixpath
import warnings
from collections.abc import Callable, Mapping

from occlutrace_compute.errors import InputRejected, too_large
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.model import Texture
from occlutrace_compute.meshes.parsed import printable

Resolver = Callable[[str], "bytes | None"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
COMPANION_SUFFIXES = (".mtl",) + IMAGE_SUFFIXES
MATERIAL = "texture"


def base_name(ref: str) -> str:
    """The file name alone of a reference written in a mesh or MTL (paths, Windows ones too, are
    never followed: a texture is looked up only beside the mesh, by its base name)."""
    return posixpath.basename(ref.replace("\\", "/").strip().strip('"'))


def resolver_of(companions: Mapping[str, bytes] | Resolver | None) -> Resolver:
    """Looks a referenced file up by base name among `companions` (files sent with the mesh, or
    a function that fetches a case's committed input by name)."""
    if callable(companions):
        return lambda ref: companions(base_name(ref))
    files = dict(companions or {})
    return lambda ref: files.get(base_name(ref))


def companion_files(fmt: str, texture: Texture | None, stem: str) -> tuple[str | None, dict[str, bytes]]:
    """The reference a written mesh carries (OBJ: `<stem>.mtl`; PLY: `<stem>.<png|jpg>`) and the
    files to write beside it (our MTL, the re-encoded image); (None, {}) without a texture."""
    if texture is None or fmt not in ("obj", "ply"):
        return None, {}
    image = f"{stem}.{texture.suffix}"
    if fmt == "ply":
        return image, {image: texture.data}
    return f"{stem}.mtl", {f"{stem}.mtl": write_mtl(image), image: texture.data}


def clean_companion(data: bytes, name: str, limits: Limits, check_name: Callable[[str], str]) -> bytes:
    """An uploaded MTL or texture image, re-made: the image re-encoded from its pixels, the MTL
    re-written as `newmtl texture` + `map_Kd <name>` with its image's base name passed through
    `check_name` (the service's file-name privacy check). InputRejected for anything else."""
    lower = name.lower()
    if lower.endswith(IMAGE_SUFFIXES):
        return reencode(data, name, limits).data
    if lower.endswith(".mtl"):
        if len(data) > limits.max_bytes:
            raise InputRejected(name, too_large(len(data), limits.max_bytes, "Limits.max_bytes"))
        image, _ = parse_mtl(data, name)
        if image is None:
            raise InputRejected(name, "the MTL names no map_Kd texture image")
        if not image.lower().endswith(IMAGE_SUFFIXES):
            raise InputRejected(name, "unsupported texture format: PNG or JPEG expected")
        return write_mtl(check_name(image))
    raise InputRejected(name, "not a companion file (.mtl, .png, .jpg)")


def image_info(data: bytes) -> list[tuple[str, str]]:
    """What an image file carries beside its pixels (all dropped by `reencode`): EXIF, XMP, ICC,
    text chunks, comments, thumbnails, each with its size in bytes."""
    from PIL import Image

    out: list[tuple[str, str]] = []
    try:
        with Image.open(io.BytesIO(data)) as im:
            for key, value in im.info.items():
                if str(key).startswith("jfif") or key in ("dpi", "progressive", "progression"):
                    continue  # the JFIF header every JPEG writer (ours too) puts: version and density
                size = len(value) if isinstance(value, (bytes, str)) else len(repr(value))
                shown = printable(value.decode("latin-1") if isinstance(value, bytes) else str(value), 80)
                out.append((f"texture.{printable(str(key), 40)}", f"{size} bytes: {shown}"))
            for app, payload in getattr(im, "applist", []):
                if app == "APP0" and payload.startswith(b"JFIF\x00") and len(payload) <= 16:
                    continue
                out.append(("texture.jpeg_segment", f"{app}, {len(payload)} bytes"))
    except Exception:  # reencode gives the clear error; this is only the report
        pass
    return out


def reencode(data: bytes, name: str, limits: Limits) -> Texture:
    """A fresh PNG or JPEG (same format as the input) from the decoded pixels only."""
    from PIL import Image

    if len(data) > limits.max_bytes:
        raise InputRejected(name, too_large(len(data), limits.max_bytes, "Limits.max_bytes", "texture"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=("PNG", "JPEG"))
            width, height = im.size
            if width * height > limits.max_texture_pixels:
                raise InputRejected(
                    name,
                    f"texture too large: {width}x{height} pixels, over the limit of {limits.max_texture_pixels} "
                    "pixels (Limits.max_texture_pixels)",
                )
            fmt = (im.format or "").lower()  # one of `formats` once opened
            mode = "RGBA" if (im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info) and fmt == "png" else "RGB"
            pixels = im.convert(mode).tobytes()
    except InputRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputRejected(name, "texture too large: over Pillow's decompression-bomb limit") from None
    except Exception as e:  # Pillow raises many kinds for a corrupt or foreign image
        raise InputRejected(
            name, f"unsupported or corrupt texture image (PNG or JPEG expected): {printable(str(e), 120)}"
        ) from None
    clean = Image.frombytes(mode, (width, height), pixels)  # a new image: empty info, no metadata
    buf = io.BytesIO()
    if fmt == "jpeg":
        clean.save(buf, "JPEG", quality=95, optimize=True)
    else:
        clean.save(buf, "PNG", optimize=False)
    return Texture(buf.getvalue(), fmt, width, height)


def parse_mtl(data: bytes, name: str) -> tuple[str | None, list[tuple[str, str]]]:
    """The one `map_Kd` image file name of an MTL (or None) and what the MTL carries that we do
    not write back (every other statement, names, comments). Several different map_Kd images are
    rejected: one texture per mesh."""
    text = data.decode("utf-8", errors="replace")
    images: list[str] = []
    dropped: list[tuple[str, str]] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if raw.strip().startswith("#"):
            dropped.append(("mtl.comment", printable(raw.strip()[1:], 200)))
            continue
        if not words:
            continue
        if words[0] == "map_Kd" and len(words) >= 2:
            images.append(base_name(words[-1]))  # options (-s, -o ...) come before the file name
            dropped.append(("mtl.map_Kd", f"file name {printable(words[-1], 200)} (renamed)"))
        else:
            dropped.append((f"mtl.{printable(words[0], 40)}", printable(" ".join(words[1:]), 200)))
    distinct = sorted(set(images))
    if len(distinct) > 1:
        raise InputRejected(
            name, f"more than one texture image in the MTL ({len(distinct)}): one texture per mesh is supported"
        )
    return (distinct[0] if distinct else None), dropped


def write_mtl(image_name: str) -> bytes:
    """Our MTL: one material and its diffuse map, nothing else."""
    if not image_name or any(c.isspace() or not c.isprintable() for c in image_name):
        raise InputRejected(image_name or "texture", "texture file name must be one printable word")
    return f"newmtl {MATERIAL}\nmap_Kd {image_name}\n".encode("ascii")


def load_texture(
    fmt: str,
    ref: str,
    source: str,
    resolve: Resolver,
    limits: Limits,
) -> tuple[Texture | None, list[tuple[str, str]], list[str]]:
    """The re-encoded texture a mesh names (OBJ: `ref` is the mtllib; PLY: the TextureFile), the
    metadata dropped on the way, and warnings (a missing MTL or image drops the texture)."""
    meta: list[tuple[str, str]] = []
    image_ref = ref
    if fmt == "obj":
        mtl = resolve(ref)
        if mtl is None:
            return (
                None,
                meta,
                [f"texture dropped: material file {printable(base_name(ref), 80)!r} not found beside the mesh"],
            )
        if len(mtl) > limits.max_bytes:
            raise InputRejected(base_name(ref), too_large(len(mtl), limits.max_bytes, "Limits.max_bytes"))
        found, meta = parse_mtl(mtl, base_name(ref))
        if found is None:
            return None, meta, [f"texture dropped: {printable(base_name(ref), 80)!r} names no map_Kd image"]
        image_ref = found
    image_name = base_name(image_ref)
    if not image_name.lower().endswith(IMAGE_SUFFIXES):
        raise InputRejected(printable(image_name, 80), "unsupported texture format: PNG or JPEG expected")
    data = resolve(image_name)
    if data is None:
        return None, meta, [f"texture dropped: image {printable(image_name, 80)!r} not found beside the mesh"]
    meta += image_info(data)
    meta.append(("texture.file", f"{printable(image_name, 80)}, {len(data)} bytes (re-encoded from its pixels)"))
    return reencode(data, image_name, limits), meta, []
