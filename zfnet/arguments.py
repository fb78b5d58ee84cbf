"""Argument types shared by the scripts' command lines."""
import argparse


def int_list(text):
    """`--flag 1,2,5` as [1, 2, 5]."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
