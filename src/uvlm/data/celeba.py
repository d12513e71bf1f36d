"""A copy of CelebA read from the layouts users have; nothing is downloaded.

Layouts (found under the given folder, or under its `celeba/` subfolder, as torchvision keeps it):

- official: `img_align_celeba/*.jpg`, `list_attr_celeba.txt` (a count line, a line of 40
  attribute names, then `000001.jpg -1 1 ...`), `list_eval_partition.txt` (`000001.jpg 0`,
  0 train / 1 valid / 2 test); the Google Drive copy keeps them in `Img/`, `Anno/`, `Eval/`;
- Hugging Face parquet (flwrlabs/celeba's export): `*.parquet` files with an `image` column
  ({bytes, path}) and one boolean column per attribute; the split is named in each file's
  path (`train-00000-of-00019.parquet`, `valid/0000.parquet`, `test-...`).

Only the paper's seven attributes are kept (section 3.1). Reading the index touches the text
files or the parquet files' attribute columns only; an image is decoded when it is asked for.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from uvlm.errors import UvlmError

ATTRIBUTES = ("Black_Hair", "Eyeglasses", "No_Beard", "Male", "Wearing_Hat", "Wearing_Necklace", "Wearing_Necktie")
PARTITIONS = ("train", "valid", "test")  # the official partition's 0, 1, 2

_OFFICIAL = {
    "images": ("img_align_celeba", "Img/img_align_celeba"),
    "attributes": ("list_attr_celeba.txt", "Anno/list_attr_celeba.txt"),
    "partition": ("list_eval_partition.txt", "Eval/list_eval_partition.txt"),
}


@dataclass(frozen=True)
class CelebA:
    """The index of a CelebA copy: per image, its name, the seven attributes and its partition."""

    root: Path
    layout: str  # "official" or "parquet"
    names: tuple[str, ...]
    attributes: np.ndarray  # (n, 7) bool, columns in ATTRIBUTES order
    partition: np.ndarray  # (n,) int8: 0 train, 1 valid, 2 test
    # parquet: where each image's bytes are, (file, row); official: None (images are files)
    rows: tuple[tuple[Path, int], ...] | None = None
    image_folder: Path | None = None

    def __len__(self) -> int:
        return len(self.names)

    def pool(self, partition: str) -> np.ndarray:
        """Indices of the images of one official partition."""
        return np.flatnonzero(self.partition == PARTITIONS.index(partition))

    def image(self, i: int) -> Image.Image:
        """Image `i`, decoded (RGB); a missing or corrupt file is one clear error."""
        if self.rows is None:
            assert self.image_folder is not None
            source: Path | bytes = self.image_folder / self.names[i]
            where = str(source)
        else:
            path, row = self.rows[i]
            source = _parquet_image_bytes(path, row)
            where = f"{path} row {row}"
        try:
            with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as img:
                return img.convert("RGB")
        except (OSError, ValueError):
            raise UvlmError(f"CelebA image {self.names[i]} ({where}) is missing or corrupt; "
                            "restore it from your copy of CelebA") from None


def read_celeba(path: Path) -> CelebA:
    """The CelebA copy at `path` (any layout above), or one line saying what is missing and
    where it was looked for."""
    path = Path(path)
    if not path.is_dir():
        raise UvlmError(f"--celeba {path} is not a folder; give the folder that holds your copy of CelebA "
                        "(img_align_celeba/ and the list_*.txt files, or the parquet files)")
    tried = []
    for root in (path, path / "celeba"):
        if not root.is_dir():
            continue
        found = {k: next((root / c for c in cands if (root / c).exists()), None) for k, cands in _OFFICIAL.items()}
        if any(found.values()):
            missing = [cands[0] for k, cands in _OFFICIAL.items() if found[k] is None]
            if missing:
                raise UvlmError(f"CelebA at {root} is partial: {', '.join(missing)} missing (looked for "
                                f"{'; '.join(' or '.join(c) for k, c in _OFFICIAL.items() if found[k] is None)})")
            return _read_official(root, found["images"], found["attributes"], found["partition"])
        tried.append(str(root))
    parquets = sorted(p for p in path.rglob("*.parquet"))
    if parquets:
        return _read_parquet(path, parquets)
    raise UvlmError(f"no CelebA found at {path}: looked in {' and '.join(tried)} for img_align_celeba/, "
                    "list_attr_celeba.txt and list_eval_partition.txt (also under Img/, Anno/, Eval/), "
                    "and below it for *.parquet files")


def _lines(path: Path) -> list[list[str]]:
    try:
        return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        raise UvlmError(f"{path} is not readable text; restore it from your copy of CelebA") from None


def _read_official(root: Path, images: Path, attr_file: Path, partition_file: Path) -> CelebA:
    lines = _lines(attr_file)
    if len(lines) < 2:
        raise UvlmError(f"{attr_file} has no attribute table; restore it from your copy of CelebA")
    header = lines[1] if lines[0][0].isdigit() else lines[0]  # the count line may be missing
    body = lines[2:] if header is lines[1] else lines[1:]
    missing = [a for a in ATTRIBUTES if a not in header]
    if missing:
        raise UvlmError(f"{attr_file} lacks the attributes {', '.join(missing)}")
    cols = [header.index(a) + 1 for a in ATTRIBUTES]  # +1: each row starts with the file name
    names, values = [], []
    for n, row in enumerate(body, start=3):
        if len(row) != len(header) + 1 or any(v not in ("1", "-1") for v in row[1:]):
            raise UvlmError(f"{attr_file} line {n} is not a file name and {len(header)} values of 1 or -1")
        names.append(row[0])
        values.append([row[c] == "1" for c in cols])
    part = {}
    for n, row in enumerate(_lines(partition_file), start=1):
        if len(row) != 2 or row[1] not in ("0", "1", "2"):
            raise UvlmError(f"{partition_file} line {n} is not a file name and a partition 0, 1 or 2")
        part[row[0]] = int(row[1])
    unassigned = [m for m in names if m not in part]
    if unassigned:
        raise UvlmError(f"{partition_file} gives no partition for {len(unassigned)} images (first: {unassigned[0]})")
    return CelebA(root, "official", tuple(names), np.array(values, dtype=bool).reshape(-1, len(ATTRIBUTES)),
                  np.array([part[m] for m in names], dtype=np.int8), image_folder=images)


def _split_of(path: Path) -> int | None:
    for i, split in enumerate(PARTITIONS):
        if re.search(rf"(^|[/_\-.]){split}([/_\-.]|$)", path.as_posix().lower()) or \
                (split == "valid" and re.search(r"(^|[/_\-.])validation([/_\-.]|$)", path.as_posix().lower())):
            return i
    return None


def _pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UvlmError("reading CelebA's parquet export needs pyarrow: pip install 'uvlm[celeba]'") from None
    return pq


def _read_parquet(root: Path, files: list[Path]) -> CelebA:
    pq = _pyarrow()
    names, values, partition, rows = [], [], [], []
    for f in files:
        split = _split_of(f.relative_to(root))
        if split is None:
            raise UvlmError(f"{f}: the file's path names no split (train, valid or test); keep the export's names")
        try:
            schema = pq.read_schema(f)
            missing = [a for a in ATTRIBUTES if a not in schema.names]
            if missing or "image" not in schema.names:
                raise UvlmError(f"{f} is not CelebA's parquet export: no column {', '.join(missing or ['image'])}")
            wrong = [a for a in ATTRIBUTES if str(schema.field(a).type) != "bool"]
            if wrong:
                raise UvlmError(f"{f}: the columns {', '.join(wrong)} are not boolean (the export's type); "
                                "convert them (true = the attribute holds)")
            table = pq.read_table(f, columns=list(ATTRIBUTES))
            paths = pq.read_table(f, columns=["image"]).column("image").combine_chunks().field("path").to_pylist() \
                if _has_path(schema) else [None] * table.num_rows
        except UvlmError:
            raise
        except Exception:  # pyarrow's errors for a damaged file have no common base
            raise UvlmError(f"{f} is not a readable parquet file; restore it from your copy of CelebA") from None
        if any(table.column(a).null_count for a in ATTRIBUTES):
            raise UvlmError(f"{f}: an attribute column has empty values; restore the file from your copy")
        cols = [table.column(a).to_numpy(zero_copy_only=False) for a in ATTRIBUTES]
        for r in range(table.num_rows):
            names.append(paths[r] or f"{f.stem}-{r:06d}")
            values.append([bool(c[r]) for c in cols])
            partition.append(split)
            rows.append((f, r))
    return CelebA(root, "parquet", tuple(names), np.array(values, dtype=bool).reshape(-1, len(ATTRIBUTES)),
                  np.array(partition, dtype=np.int8), rows=tuple(rows))


def _has_path(schema) -> bool:
    image = schema.field("image").type
    return hasattr(image, "get_field_index") and image.get_field_index("path") >= 0


def _parquet_image_bytes(path: Path, row: int) -> bytes:
    pq = _pyarrow()
    try:
        f = pq.ParquetFile(path)
        start = 0
        for g in range(f.num_row_groups):
            n = f.metadata.row_group(g).num_rows
            if row < start + n:
                cell = f.read_row_group(g, columns=["image"]).column("image")[row - start].as_py()
                return cell["bytes"] if isinstance(cell, dict) else cell
            start += n
    except Exception:  # pyarrow's errors for a damaged file have no common base
        pass
    raise UvlmError(f"{path} row {row}: no image bytes; restore the file from your copy of CelebA")
