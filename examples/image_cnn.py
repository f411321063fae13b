"""A small convolutional network for a folder of class subfolders of images, and scikit-learn's digits written as one.

From the repository root (so that `examples.image_cnn` is importable, as in examples/image_cnn.yaml):

    python -m examples.image_cnn data        # data/digits/<class>/<n>.png and data/digits.tar
    DATA_DIR=data mlhpc train examples/image_cnn.yaml --run-dir runs/cnn
"""
import sys, tarfile
from pathlib import Path
import numpy as np
from torch import nn
from ml_hpc.core import MlhpcError
from ml_hpc.data import digits_file

def make_cnn(info:dict, # data facts: input_shape [C, H, W] and num_classes
             channels:int=16, # channels of the first block; each further block doubles them
             depth:int=2, # convolution blocks, each halving the image's height and width
             dropout:float=0.0): # dropout before the classifier
    "Blocks of 3x3 convolution, batch norm, ReLU and 2x2 max-pooling, then global average pooling and a linear classifier."
    c, h, w = info["input_shape"]
    if min(h, w) >> depth < 1: raise MlhpcError(f"model.depth {depth} halves the {h}x{w} images below one pixel", f"use depth {max(min(h, w).bit_length() - 1, 1)} or less, or a larger data.image_size")
    layers = []
    for i in range(depth):
        out = channels * 2**i
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
        c = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, info["num_classes"]))

def write_digits(dest="data")->Path: # the folder to write digits/ and digits.tar into
    "scikit-learn's 1,797 digits as 8x8 greyscale PNGs in dest/digits/<class>/, packed as dest/digits.tar (returned)."
    from PIL import Image
    d, root = np.loadtxt(digits_file(), delimiter=",", dtype=np.float32), Path(dest)/"digits"
    for i, row in enumerate(d):
        (root/str(int(row[64]))).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(row[:64].reshape(8, 8) * 255 / 16).astype(np.uint8)).save(root/str(int(row[64]))/f"{i:04d}.png")
    tar = Path(dest)/"digits.tar"
    with tarfile.open(tar, "w") as t: t.add(root, arcname="digits", filter=lambda ti: None if Path(ti.name).name.startswith(".") else ti)
    return tar

if __name__ == "__main__": print(write_digits(*sys.argv[1:2]))
