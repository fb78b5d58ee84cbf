"""Result tables, written as CSV for programs and as Markdown for people (and the README)."""

import csv
import io
import statistics

from zfnet.files import atomic_write_text


def csv_text(rows):
    """CSV of a list of dicts that share their keys, the first row's keys as the header."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def markdown_table(rows):
    """A Markdown table of a list of dicts that share their keys."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(row[column]) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_tables(csv_rows, markdown_rows, stem, title):
    """STEM.csv from `csv_rows` (plain numbers) and STEM.md, a heading and `markdown_rows`
    (the same results formatted for reading)."""
    atomic_write_text(f"{stem}.csv", csv_text(csv_rows))
    atomic_write_text(f"{stem}.md", f"# {title}\n\n{markdown_table(markdown_rows)}")


def mean_and_spread(values):
    """Mean and sample standard deviation of repeated measurements (spread 0 for one)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def plus_minus(values, digits=3):
    """`mean ± sd` of repeated measurements, or the value alone when there is one."""
    mean, spread = mean_and_spread(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {spread:.{digits}f}"
