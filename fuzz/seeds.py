"""Writes the seed corpora of the fuzz targets (run once; the files are committed).

Needs numpy, torch, tifffile, imagecodecs and Pillow. The seeds are small valid inputs of
every format each parser reads; the fuzzer mutates them.
"""
import gzip
import io
import json
import pathlib
import struct

import numpy as np
import tifffile
import torch
from PIL import Image

here = pathlib.Path(__file__).parent / "corpus"
rng = np.random.default_rng(0)


def put(target, name, data):
    (here / target / name).write_bytes(data)


# slide: tiled pyramids (gray/RGB, none/deflate/LZW/JPEG, TIFF/BigTIFF) and whole images.
def pyramid(channels, compression, big):
    shape = (64, 64, 3) if channels == 3 else (64, 64)
    level0 = rng.integers(0, 255, shape, dtype=np.uint8)
    out = io.BytesIO()
    with tifffile.TiffWriter(out, bigtiff=big) as tif:
        for level in (level0, level0[::2, ::2]):
            tif.write(level, tile=(16, 16), compression=compression,
                      photometric="rgb" if channels == 3 else "minisblack")
    return out.getvalue()


for channels in (1, 3):
    for compression in (None, "zlib", "lzw", "jpeg"):
        if compression == "jpeg" and channels == 1:
            continue
        for big in (False, True):
            name = f"pyramid-c{channels}-{compression or 'none'}-{'big' if big else 'classic'}.tif"
            put("slide", name, pyramid(channels, compression, big))
img = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("TIFF", "tif")):
    out = io.BytesIO()
    img.save(out, fmt)
    put("slide", f"image.{ext}", out.getvalue())
out = io.BytesIO()
img.save(out, "JPEG", progressive=True)
put("slide", "progressive.jpg", out.getvalue())

# idx: first byte = (split point << 1) | gzipped.
images = struct.pack(">IIII", 2051, 3, 4, 4) + bytes(rng.integers(0, 255, 48, dtype=np.uint8))
labels = struct.pack(">II", 2049, 3) + bytes([1, 7, 9])
for gz in (0, 1):
    body = gzip.compress(images) if gz else images
    split = len(body) * 128 // (len(body) + len(labels))
    put("idx", f"pair-gz{gz}", bytes([(split << 1) | gz]) + body + labels)

# features: first byte 0 = .npy, 1 = .safetensors.
values = rng.standard_normal((5, 4)).astype("<f4")
npy = io.BytesIO()
np.save(npy, values)
put("features", "bag.npy", b"\0" + npy.getvalue())
header = json.dumps({"features": {"dtype": "F32", "shape": [5, 4], "data_offsets": [0, 80]}}).encode()
header += b" " * (-len(header) % 8)
put("features", "bag.safetensors", b"\1" + struct.pack("<Q", len(header)) + header + values.tobytes())

# labels: labels.csv of slides and bags, traffic-sign annotations.
put("labels", "slides.csv", b"slide,label,split\na.tif,tumor,train\nb.tif,normal,train\nc.tif,tumor,test\n")
put("labels", "bags.csv", b"slide,label,split\na,tumor,train\nb,normal,test\n")
put("labels", "annotations.txt",
    b"a.jpg:VISIBLE, 100.0, 200.0, 120.0, 220.0, SPEED_LIMIT, 70_SIGN;\nb.jpg:MISC_SIGNS;\n")

# weights: first byte 0 = .pth (torch.save), 1 = .safetensors.
model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.BatchNorm2d(2))
pth = io.BytesIO()
torch.save({"conv1.weight": model[0].weight.detach(), "bn1.weight": model[1].weight.detach(),
            "bn1.running_var": model[1].running_var, "bn1.num_batches_tracked": model[1].num_batches_tracked}, pth)
put("weights", "small.pth", b"\0" + pth.getvalue())
pth = io.BytesIO()
torch.save(model.state_dict(), pth)
put("weights", "state_dict.pth", b"\0" + pth.getvalue())
w = model[0].weight.detach().numpy().astype("<f4")
header = json.dumps({"conv1.weight": {"dtype": "F32", "shape": list(w.shape), "data_offsets": [0, w.nbytes]}}).encode()
header += b" " * (-len(header) % 8)
put("weights", "small.safetensors", b"\1" + struct.pack("<Q", len(header)) + header + w.tobytes())

# config: the repository's configs.
root = pathlib.Path(__file__).parent.parent / "configs"
for path in sorted(root.glob("*.json")):
    put("config", path.name, path.read_bytes())

# The two tiled-JPEG pyramids with RGB photometry (`pyramid-c3-dbps-jpeg-*.tif`; tifffile writes
# JPEG tiles as YCbCr, which dbps refuses) were written once by dbps_data::write_tiled_tiff:
# 64² and 32² levels, 16 px tiles, quality 80, classic and BigTIFF.
