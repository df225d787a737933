"""The rules behind SPEC §16, each on its own: who may talk, how much, and what an attachment
becomes for a vision model (the end-to-end tests are in test_discord_people.py)."""

from __future__ import annotations

import base64
import io
import zlib

import pytest
from PIL import Image as PILImage

from voxbridge.brain import Image, Turn
from voxbridge.brain.llm import _content
from voxbridge.plugins.discord.access import Access, Where
from voxbridge.plugins.discord.attachments import MAX_SIDE, prepare_image
from voxbridge.plugins.discord.bot import slow_down
from voxbridge.plugins.discord.limits import Rate, RateLimiter

ANN, BOB, ROLE, OTHER_ROLE, GENERAL, THREAD, CATEGORY = 1, 2, 10, 11, 100, 101, 102


def where(user: int = ANN, roles: tuple[int, ...] = (), channels: tuple[int, ...] = (GENERAL,),
          dm: bool = False) -> Where:  # fmt: skip
    return Where(user, frozenset(roles), frozenset(channels), dm)


def test_an_open_bot_answers_everyone_everywhere() -> None:
    access = Access.from_settings({})
    assert access.open
    assert access.refuses(where()) is None
    assert access.refuses(where(dm=True, channels=())) is None


def test_allow_and_block_as_llmcord_users_know_them() -> None:
    access = Access.from_settings(
        {
            "allow": {"roles": [str(ROLE)], "channels": [str(GENERAL)]},
            "block": {"users": [BOB], "roles": [OTHER_ROLE]},
            "dms": False,
        }
    )
    assert not access.open
    assert access.refuses(where(roles=(ROLE,))) is None
    assert access.refuses(where()) == "user"  # no allowed role
    assert access.refuses(where(user=BOB, roles=(ROLE,))) == "user"  # blocked wins
    assert access.refuses(where(roles=(ROLE, OTHER_ROLE))) == "role"
    assert access.refuses(where(roles=(ROLE,), channels=(999,))) == "channel"
    # A thread of an allowed channel is allowed (its parent is among its channels).
    assert access.refuses(where(roles=(ROLE,), channels=(THREAD, GENERAL))) is None
    assert access.refuses(where(roles=(ROLE,), dm=True, channels=())) == "dm"
    # A DM carries no roles: allowed by role alone is not allowed there; by user it is.
    dms = Access.from_settings({"allow": {"roles": [ROLE], "users": [BOB]}})
    assert dms.refuses(where(dm=True, channels=())) == "user"
    assert dms.refuses(where(user=BOB, dm=True, channels=())) is None
    # A category lists every channel in it; blocking a channel blocks its threads.
    by_category = Access.from_settings({"allow": {"channels": [CATEGORY]}, "block": {}})
    assert by_category.refuses(where(channels=(GENERAL, CATEGORY))) is None
    blocked = Access.from_settings({"block": {"channels": [GENERAL]}})
    assert blocked.refuses(where(channels=(THREAD, GENERAL))) == "channel"
    assert blocked.refuses(where(dm=True, channels=())) is None


@pytest.mark.parametrize(
    ("text", "rate"),
    [("10/min", Rate(10, 60.0)), ("1/s", Rate(1, 1.0)), ("100/day", Rate(100, 86400.0))],
)
def test_rates_parse(text: str, rate: Rate) -> None:
    assert Rate.parse(text) == rate
    assert str(rate) == text


@pytest.mark.parametrize("text", ["10/minute", "0/min", "ten/min", "10 / min", "10/m"])
def test_what_is_not_a_rate(text: str) -> None:
    with pytest.raises(ValueError, match="not a rate"):
        Rate.parse(text)


def test_a_burst_of_the_rate_then_one_per_interval() -> None:
    limiter, rate = RateLimiter(), Rate(10, 60.0)
    assert [limiter.take("ann", rate, 0.0) for _ in range(10)] == [0.0] * 10
    assert limiter.take("ann", rate, 0.0) == pytest.approx(6.0)  # come back in 6 s
    assert limiter.take("ann", rate, 5.9) == pytest.approx(0.1)
    assert limiter.take("bob", rate, 5.9) == 0.0  # another person has their own allowance
    assert limiter.take("ann", rate, 6.0) == 0.0
    assert limiter.take("ann", rate, 6.0) == pytest.approx(6.0)
    # Refused messages are not counted: waiting the time said is enough.
    assert limiter.take("ann", rate, 12.0) == 0.0
    # One reply per wait, not one per message.
    assert limiter.first_refusal("ann", 6.0, 12.0)
    assert not limiter.first_refusal("ann", 5.0, 13.0)
    assert limiter.first_refusal("ann", 6.0, 18.0)
    # Quiet people are dropped once many are held.
    assert limiter.take("ann", rate, 1000.0) == 0.0
    assert len(limiter) == 2


def test_the_limit_reply_says_when_to_come_back() -> None:
    assert slow_down(Rate(10, 60.0), 5.6) == (
        "⏳ You've reached my limit of 10 messages a minute. Please come back in 6 seconds."
    )
    assert slow_down(Rate(100, 86400.0), 3 * 3600).endswith("come back in 3 hours.")
    assert slow_down(Rate(5, 3600.0), 600).endswith(
        "5 messages an hour. Please come back in 10 minutes."
    )
    assert slow_down(Rate(1, 1.0), 1).startswith(
        "⏳ You've reached my limit of 1 message a second."
    )


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    PILImage.new(mode, (width, height), "red" if mode == "RGB" else (255, 0, 0, 128)).save(
        out, "PNG"
    )
    return out.getvalue()


def _opened(image: Image) -> PILImage.Image:
    return PILImage.open(io.BytesIO(image.data))


def test_a_small_image_goes_as_it_is() -> None:
    data = _png(64, 32)
    image = prepare_image(data)
    assert isinstance(image, Image)
    assert (image.mime, image.data) == ("image/png", data)
    assert image.data_url() == "data:image/png;base64," + base64.b64encode(data).decode()


def test_a_large_image_is_downscaled_and_keeps_its_transparency() -> None:
    image = prepare_image(_png(4000, 3000))
    assert isinstance(image, Image)
    assert image.mime == "image/jpeg"
    assert _opened(image).size == (MAX_SIDE, MAX_SIDE * 3 // 4)
    clear = prepare_image(_png(3000, 100, "RGBA"))
    assert isinstance(clear, Image)
    assert clear.mime == "image/png" and _opened(clear).mode == "RGBA"
    assert max(_opened(clear).size) == MAX_SIDE


def test_a_format_the_api_does_not_take_is_converted() -> None:
    out = io.BytesIO()
    PILImage.new("RGB", (10, 10)).save(out, "BMP")
    image = prepare_image(out.getvalue())
    assert isinstance(image, Image)
    assert image.mime == "image/jpeg"


def test_garbage_and_bombs_are_not_decoded() -> None:
    assert prepare_image(b"not an image at all") == "not an image that can be read"
    # A PNG header claiming 100,000 by 100,000 pixels: refused before anything is decoded.
    png = _png(1, 1)
    header = b"IHDR" + (100_000).to_bytes(4, "big") * 2 + png[24:29]
    bomb = png[:12] + header + zlib.crc32(header).to_bytes(4, "big") + png[33:]
    assert prepare_image(bomb) == "too large (too many pixels)"


def test_text_only_turns_are_sent_as_they_always_were() -> None:
    assert _content(Turn("user", "hi")) == "hi"
    image = Image("image/png", b"\x89PNG")
    assert _content(Turn("user", "look", (image,))) == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": image.data_url()}},
    ]
    assert _content(Turn("user", "", (image,))) == [
        {"type": "image_url", "image_url": {"url": image.data_url()}}
    ]
