"""What people attach to a message, made into what the brain can take (SPEC §16).

- Images go to a vision model as image parts: downloaded (up to :data:`MAX_DOWNLOAD`), and
  when larger than :data:`MAX_SIDE` pixels on a side or :data:`MAX_IMAGE_BYTES`, or in a format
  the OpenAI API does not take, downscaled and re-encoded with Pillow in a worker thread. At
  most :data:`MAX_IMAGES` per answer. ``llm.vision: false`` turns them off.
- Text files up to :data:`MAX_TEXT` are inlined, between lines that name them.
- Anything else is named, with a note that it was not read (and why).

The message text the brain sees — and memory keeps — names every attachment on a line of its
own (``[image: cat.png]``): the history holds images by reference, and only the message being
answered (or a reply chain pointing back at one) carries their pixels, so no request repeats
megabytes of base64 from earlier turns. A message without attachments costs nothing here.
"""

from __future__ import annotations

import io
import mimetypes
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from ...brain import Image
from ..aio import run_on_loop

__all__ = [
    "MAX_DOWNLOAD",
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "MAX_SIDE",
    "MAX_TEXT",
    "Attachment",
    "Read",
    "prepare_image",
    "read_attachments",
]

MAX_TEXT = 100 * 1024
"""Bytes of a text file inlined, at most (a larger one is named, not read)."""
MAX_DOWNLOAD = 20 * 1024 * 1024
"""Bytes of an image downloaded, at most."""
MAX_SIDE = 1568
"""Pixels on an image's longer side once prepared (what vision models read at full detail)."""
MAX_IMAGE_BYTES = 2 * 1024 * 1024
"""Bytes of a prepared image, at most (a larger one is re-encoded as JPEG)."""
MAX_PIXELS = 60_000_000
"""An image with more pixels than this is not decoded at all (a decompression bomb)."""
MAX_IMAGES = 4
"""Images in one request to the LLM, at most (the message's first, then its reply chain's)."""
_SENDABLE = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_TEXT_TYPES = {"application/json", "application/xml", "application/x-yaml", "application/yaml"}
_TEXT_SUFFIXES = {
    "c", "cfg", "conf", "cpp", "cs", "css", "csv", "go", "h", "hpp", "html", "ini", "java",
    "js", "json", "jsx", "kt", "log", "lua", "md", "php", "pl", "py", "rb", "rs", "rst", "sh",
    "sql", "swift", "toml", "ts", "tsx", "tsv", "txt", "xml", "yaml", "yml",
}  # fmt: skip
_PILLOW = trio.CapacityLimiter(2)  # images decoded at once (the machine's cores, not more)

Read = Callable[[], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Attachment:
    """An attached file as Discord describes it; ``read`` downloads it (on the asyncio loop,
    through the bot's own HTTP session)."""

    name: str
    size: int
    content_type: str | None
    read: Read = field(repr=False, compare=False)

    @property
    def mime(self) -> str:
        """Its media type, from Discord or else from its name."""
        told = (self.content_type or "").split(";")[0].strip().lower()
        return told or (mimetypes.guess_type(self.name)[0] or "application/octet-stream")

    @property
    def kind(self) -> str:
        """``image``, ``text`` or ``other``."""
        mime = self.mime
        if mime.startswith("image/"):
            return "image"
        suffix = self.name.rpartition(".")[2].lower() if "." in self.name else ""
        if mime.startswith("text/") or mime in _TEXT_TYPES or suffix in _TEXT_SUFFIXES:
            return "text"
        return "other"


def _size(n: int) -> str:
    for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def prepare_image(data: bytes) -> Image | str:
    """``data`` as an image a vision model takes (downscaled and re-encoded when needed), or
    why it cannot be one. Blocking: run it in a worker thread."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    return "too large (too many pixels)"
                mime = _SENDABLE.get(img.format or "")
                animated = bool(getattr(img, "is_animated", False))
                if (
                    mime
                    and not animated
                    and max(width, height) <= MAX_SIDE
                    and len(data) <= MAX_IMAGE_BYTES
                ):
                    return Image(mime, data)
                img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decoded at a smaller scale
                img.thumbnail((MAX_SIDE, MAX_SIDE))  # (the first frame of an animation)
                return _encode(img)
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        return "too large (too many pixels)"
    except (OSError, ValueError, UnidentifiedImageError):
        return "not an image that can be read"


def _encode(img: PILImage.Image) -> Image:
    out = io.BytesIO()
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img.convert("RGBA").save(out, "PNG", optimize=False)
        if out.tell() <= MAX_IMAGE_BYTES:
            return Image("image/png", out.getvalue())
        out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=85)
    return Image("image/jpeg", out.getvalue())


async def _image(attachment: Attachment) -> Image | str:
    if attachment.size > MAX_DOWNLOAD:
        return f"too large to read ({_size(attachment.size)})"
    data = await run_on_loop(attachment.read)
    return await trio.to_thread.run_sync(prepare_image, data, limiter=_PILLOW)


async def _text(attachment: Attachment) -> str | None:
    """The file's text, or None when it is not text after all (binary bytes)."""
    data = await run_on_loop(attachment.read)
    if b"\x00" in data[:4096]:
        return None
    return data[:MAX_TEXT].decode("utf-8", "replace").rstrip()


async def read_attachments(
    attachments: Sequence[Attachment], *, vision: bool, images: int = MAX_IMAGES
) -> tuple[str, tuple[Image, ...]]:
    """The lines that name (and, for text files, hold) ``attachments``, and the images to show
    with them (at most ``images``). A file that cannot be downloaded is named with why.

    Cancellation: downloads and decoding in flight are abandoned at once.
    """
    lines: list[str] = []
    shown: list[Image] = []
    for attachment in attachments:
        name, kind = attachment.name, attachment.kind
        try:
            if kind == "image" and not vision:
                lines.append(f"[image: {name} — not looked at: this agent does not see images]")
            elif kind == "image" and len(shown) >= images:
                lines.append(f"[image: {name} — not looked at: {images} images at most]")
            elif kind == "image":
                image = await _image(attachment)
                if isinstance(image, str):
                    lines.append(f"[image: {name} — not looked at: {image}]")
                else:
                    shown.append(image)
                    lines.append(f"[image: {name}]")
            elif kind == "text" and attachment.size <= MAX_TEXT:
                text = await _text(attachment)
                if text is None:
                    lines.append(f"[file: {name} — not read: it is not text]")
                else:
                    lines.append(f"[file: {name}]\n{text}\n[end of {name}]")
            else:
                why = (
                    f"text files over {MAX_TEXT // 1024} KB are not read"
                    if kind == "text"
                    else "only images and text files are read"
                )
                lines.append(f"[file: {name}, {_size(attachment.size)} — not read: {why}]")
        except Exception as exc:  # a download that fails loses that file, not the message
            lines.append(f"[file: {name} — could not be downloaded: {type(exc).__name__}]")
    return "\n".join(lines), tuple(shown)
