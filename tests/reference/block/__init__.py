"""Tests of the reference's block layer (reference/block.py) beyond what QEMU can pin."""
