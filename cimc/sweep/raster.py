"""A small raster canvas and PNG encoder for the sweep's Pareto plots: no plotting library needed.

The plots are drawn once as a list of shapes (:mod:`cimc.sweep.report`) and rendered twice:
as SVG markup, and here as pixels. The canvas knows the few shapes a plot uses (rectangles,
lines, dots, text) in the SVG's user units, drawn at ``scale`` pixels per unit (2: a sharp
image on high-density screens), with anti-aliased edges from each pixel's distance to the
shape. Text uses the classic 5x7 bitmap font (printable ASCII, with true descenders for g, j, p, q and
y; anything else draws as "?"),
upright or turned 90 degrees counter-clockwise. :func:`png` writes RGB, 8 bits per channel.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

#: 5x7 glyphs, one per printable ASCII character from " " to "~": 5 column bytes each,
#: bit 0 the top row (the public-domain font of many character LCDs).
FONT = bytes.fromhex(
    "0000000000" "00005f0000" "0007000700" "147f147f14" "242a7f2a12" "2313086462" "3649552250" "0005030000"
    "001c224100" "0041221c00" "082a1c2a08" "08083e0808" "0050300000" "0808080808" "0060600000" "2010080402"
    "3e5149453e" "00427f4000" "4261514946" "2141454b31" "1814127f10" "2745454539" "3c4a494930" "0171090503"
    "3649494936" "064949291e" "0036360000" "0056360000" "0814224100" "1414141414" "0041221408" "0201510906"
    "324979413e" "7e1111117e" "7f49494936" "3e41414122" "7f4141221c" "7f49494941" "7f09090101" "3e41415132"
    "7f0808087f" "00417f4100" "2040413f01" "7f08142241" "7f40404040" "7f0204027f" "7f0408107f" "3e4141413e"
    "7f09090906" "3e4151215e" "7f09192946" "4649494931" "01017f0101" "3f4040403f" "1f2040201f" "7f2018207f"
    "6314081463" "0304780403" "6151494543" "00007f4141" "0204081020" "41417f0000" "0402010204" "4040404040"
    "0001020400" "2054545478" "7f48444438" "3844444420" "384444487f" "3854545418" "087e090102" "081454543c"
    "7f08040478" "00447d4000" "2040443d00" "007f102844" "00417f4000" "7c04180478" "7c08040478" "3844444438"
    "7c14141408" "081414187c" "7c08040408" "4854545420" "043f444020" "3c4040207c" "1c2040201c" "3c4030403c"
    "4428102844" "0c5050503c" "4464544c44" "0008364100" "00007f0000" "0041360800" "0804080408")
#: Lower-case letters with descenders, redrawn two rows deeper than the font has room for.
DESCENDERS = {"g": (0x38, 0x144, 0x144, 0x144, 0xFC), "j": (0x80, 0x100, 0x100, 0xFD, 0),
              "p": (0x1FC, 0x44, 0x44, 0x44, 0x38), "q": (0x38, 0x44, 0x44, 0x44, 0x1FC),
              "y": (0x3C, 0x140, 0x140, 0x140, 0xFC)}
GLYPH_W, GLYPH_H, ADVANCE = 5, 7, 6
ROWS = GLYPH_H + 2                   # with the descenders' two rows below the baseline

_NAMED = {"white": (255, 255, 255), "black": (0, 0, 0)}


def rgb(color: str) -> np.ndarray:
    """"#rrggbb", "#rgb", "white" or "black" as floats in [0, 1]."""
    if color in _NAMED:
        return np.array(_NAMED[color], np.float32) / 255
    h = color.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return np.array([int(h[i:i + 2], 16) for i in (0, 2, 4)], np.float32) / 255


def glyph(char: str) -> np.ndarray:
    """One character as a boolean [9, 5] array (rows top to bottom; the baseline under row 6)."""
    code = ord(char) if 32 <= ord(char) <= 126 else ord("?")
    columns = DESCENDERS.get(char) or FONT[(code - 32) * GLYPH_W:(code - 31) * GLYPH_W]
    return np.array([[(c >> row) & 1 for c in columns] for row in range(ROWS)], dtype=bool)


def text_mask(text: str, pixel: int, bold: bool = False) -> np.ndarray:
    """A line of text as a boolean mask, each font pixel ``pixel`` device pixels square."""
    width = max(len(text) * ADVANCE - 1, 1) + bold
    mask = np.zeros((ROWS, width), dtype=bool)
    for i, char in enumerate(text):
        g = glyph(char)
        mask[:, i * ADVANCE:i * ADVANCE + GLYPH_W] |= g
        if bold:
            mask[:, i * ADVANCE + 1:i * ADVANCE + GLYPH_W + 1] |= g
    return np.kron(mask, np.ones((pixel, pixel), dtype=bool))


class Canvas:
    """A white RGB image of ``width`` x ``height`` user units at ``scale`` pixels per unit."""

    def __init__(self, width: float, height: float, scale: int = 2) -> None:
        self.scale = scale
        self.pixels = np.ones((int(round(height * scale)), int(round(width * scale)), 3), np.float32)

    def _blend(self, top: int, left: int, alpha: np.ndarray, color: str, opacity: float = 1.0) -> None:
        """Paint ``color`` with coverage ``alpha`` (a 2-D array placed at ``top``, ``left``), clipped."""
        h, w = self.pixels.shape[:2]
        t0, l0 = max(top, 0), max(left, 0)
        t1, l1 = min(top + alpha.shape[0], h), min(left + alpha.shape[1], w)
        if t0 >= t1 or l0 >= l1:
            return
        a = alpha[t0 - top:t1 - top, l0 - left:l1 - left].astype(np.float32)[..., None] * opacity
        region = self.pixels[t0:t1, l0:l1]
        region += a * (rgb(color) - region)

    def _grid(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, np.ndarray, np.ndarray]:
        """The device pixels covering a box in device coordinates, and their centres."""
        left, top = int(np.floor(x0)), int(np.floor(y0))
        right, bottom = int(np.ceil(x1)), int(np.ceil(y1))
        ys, xs = np.mgrid[top:max(bottom, top + 1), left:max(right, left + 1)]
        return top, left, xs + 0.5, ys + 0.5

    def rect(self, x: float, y: float, w: float, h: float, fill: str | None = None, stroke: str | None = None,
             width: float = 1.0) -> None:
        s = self.scale
        if fill is not None:
            top, left = int(round(y * s)), int(round(x * s))
            self._blend(top, left, np.ones((int(round(h * s)), int(round(w * s)))), fill)
        if stroke is not None:
            for a, b in (((x, y), (x + w, y)), ((x + w, y), (x + w, y + h)), ((x + w, y + h), (x, y + h)),
                         ((x, y + h), (x, y))):
                self.line(*a, *b, stroke, width)

    def line(self, x1: float, y1: float, x2: float, y2: float, color: str, width: float = 1.0,
             opacity: float = 1.0) -> None:
        s = self.scale
        ax, ay, bx, by, half = x1 * s, y1 * s, x2 * s, y2 * s, width * s / 2
        top, left, px, py = self._grid(min(ax, bx) - half - 1, min(ay, by) - half - 1,
                                       max(ax, bx) + half + 1, max(ay, by) + half + 1)
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        t = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0, 1) if length2 else np.zeros_like(px)
        distance = np.hypot(px - (ax + t * dx), py - (ay + t * dy))
        self._blend(top, left, np.clip(half + 0.5 - distance, 0, 1), color, opacity)

    def polyline(self, points: list[tuple[float, float]], color: str, width: float = 1.0,
                 opacity: float = 1.0) -> None:
        """Joined segments; their coverage is combined first, so joints are not painted twice."""
        if len(points) == 1:
            points = points * 2
        s = self.scale
        xs = [p[0] * s for p in points]
        ys = [p[1] * s for p in points]
        half = width * s / 2
        top, left, px, py = self._grid(min(xs) - half - 1, min(ys) - half - 1, max(xs) + half + 1,
                                       max(ys) + half + 1)
        cover = np.zeros(px.shape, np.float32)
        for ax, ay, bx, by in zip(xs, ys, xs[1:], ys[1:]):
            dx, dy = bx - ax, by - ay
            length2 = dx * dx + dy * dy
            t = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0, 1) if length2 else np.zeros_like(px)
            distance = np.hypot(px - (ax + t * dx), py - (ay + t * dy))
            np.maximum(cover, np.clip(half + 0.5 - distance, 0, 1), out=cover)
        self._blend(top, left, cover, color, opacity)

    def circle(self, cx: float, cy: float, r: float, fill: str, stroke: str | None = None,
               width: float = 0.0) -> None:
        """A disc; a stroke is centred on the edge, as in SVG."""
        s = self.scale
        x, y = cx * s, cy * s
        outer = (r + (width / 2 if stroke else 0)) * s
        top, left, px, py = self._grid(x - outer - 1, y - outer - 1, x + outer + 1, y + outer + 1)
        distance = np.hypot(px - x, py - y)
        if stroke is not None:
            self._blend(top, left, np.clip(outer + 0.5 - distance, 0, 1), stroke)
            inner = (r - width / 2) * s
            self._blend(top, left, np.clip(inner + 0.5 - distance, 0, 1), fill)
        else:
            self._blend(top, left, np.clip(outer + 0.5 - distance, 0, 1), fill)

    def text(self, x: float, y: float, text: str, size: float = 11, anchor: str = "start", rotate: bool = False,
             color: str = "black") -> None:
        """``text`` with its baseline at ``y`` (upright) or at ``x`` (``rotate``: read bottom to top),
        anchored at its start, middle or end like SVG's text-anchor. Size 11 is the font's own."""
        s = self.scale
        pixel = max(1, int(round(s * size / 11)))
        mask = text_mask(text, pixel, bold=size >= 13)
        length = mask.shape[1]
        shift = {"start": 0, "middle": length / 2, "end": length}[anchor]
        above = GLYPH_H * pixel                   # from the top of a capital to the baseline
        if rotate:
            mask = np.rot90(mask)                 # the text's top to the left, its start at the bottom
            self._blend(int(round(y * s + shift - length)), int(round(x * s)) - above, mask, color)
        else:
            self._blend(int(round(y * s)) - above, int(round(x * s - shift)), mask, color)

    def png(self) -> bytes:
        return png(np.round(np.clip(self.pixels, 0, 1) * 255).astype(np.uint8))


def png(image: np.ndarray) -> bytes:
    """An RGB uint8 image [height, width, 3] as PNG bytes."""
    h, w, _ = image.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * 3)], axis=1)   # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))


def read_png(data: bytes) -> np.ndarray:
    """The RGB pixels of a PNG written by :func:`png` (tests and checks; not a general decoder)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] != zlib.crc32(kind + body):
            raise ValueError(f"bad CRC in PNG chunk {kind!r}")
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h = size
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 3)
    if rows[:, 0].any():
        raise ValueError("only filter type 0 is supported")
    return rows[:, 1:].reshape(h, w, 3)
