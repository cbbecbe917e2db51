"""Regenerates roster_client/_proto from schema/generated with protoc.

    python3 clients/python/regenerate.py          # rewrite the files
    python3 clients/python/regenerate.py --check  # exit 1 if they drifted
"""

import filecmp
import pathlib
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
SCHEMA = HERE.parent.parent / "schema" / "generated"
TARGET = HERE / "roster_client" / "_proto"
PROTOS = ["match.proto", "tier.proto"]


def generate(into: pathlib.Path) -> list:
    subprocess.run(["protoc", f"-I{SCHEMA}", f"--python_out={into}", f"--pyi_out={into}", *PROTOS],
                   check=True, cwd=SCHEMA)
    return sorted(p.name for p in into.iterdir() if p.suffix in (".py", ".pyi"))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = pathlib.Path(tmp)
        names = generate(fresh)
        if "--check" in sys.argv:
            drifted = [n for n in names if not (TARGET / n).exists() or not filecmp.cmp(fresh / n, TARGET / n, shallow=False)]
            if drifted:
                print(f"generated messages out of date: {', '.join(drifted)}; run python3 clients/python/regenerate.py")
                return 1
            return 0
        for n in names:
            shutil.copy(fresh / n, TARGET / n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
