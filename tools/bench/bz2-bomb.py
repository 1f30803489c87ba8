#!/usr/bin/env python3
"""Writes a single-stream bzip2 "bomb": one full block of zeros, as bzip2
itself codes it, repeated COUNT times in one stream.

    bz2-bomb.py COUNT OUT

`head -c 100G /dev/zero | bzip2` gives the same file shape (~2200 copies of
one ~40-byte block, each at a different bit alignment) but takes many
minutes to make; splicing the block bzip2 wrote takes none. The stream CRC
is combined from the block CRCs as bzip2 does (rotate left 1, xor).
Prints the uncompressed size of one block on stdout.
"""
import subprocess
import sys

BLOCK = format(0x314159265359, "048b")
EOS = format(0x177245385090, "048b")


def main():
    count, out = int(sys.argv[1]), sys.argv[2]
    # 100 MB of zeros at -9: the first block is full (900 kB after RLE).
    data = subprocess.run(
        "head -c 100M /dev/zero | bzip2 -9", shell=True, check=True, capture_output=True
    ).stdout
    bits = "".join(format(b, "08b") for b in data)
    assert bits[32:80] == BLOCK, "no block after the stream header"
    nxt = bits.find(BLOCK, 80)
    assert nxt > 0, "expected a second block"
    block = bits[32:nxt]
    crc = int(block[48:80], 2)
    one = subprocess.run(
        ["bzip2", "-dc"], input=splice(block, crc, 1), check=True, capture_output=True
    ).stdout
    assert len(one) > 0 and not any(one)
    with open(out, "wb") as f:
        f.write(splice(block, crc, count))
    print(len(one))


def splice(block, crc, count):
    combined = 0
    for _ in range(count):
        combined = (((combined << 1) | (combined >> 31)) & 0xFFFFFFFF) ^ crc
    bits = format(int.from_bytes(b"BZh9", "big"), "032b") + block * count
    bits += EOS + format(combined, "032b")
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


if __name__ == "__main__":
    main()
