"""Write docs/config.md from the config schema (`--check`: exit 1 when the file is stale)."""

import sys
from pathlib import Path

from tengine.config.docgen import render

TARGET = Path(__file__).resolve().parents[1] / "docs" / "config.md"

if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        stale = not TARGET.is_file() or TARGET.read_text() != text
        print(f"{TARGET}: {'stale, run: make docs' if stale else 'up to date'}")
        sys.exit(1 if stale else 0)
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
