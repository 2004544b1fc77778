"""Self-contained HTML from a report directory: its markdown pages with PNGs inlined.

One file a reader can open or mail anywhere: every image becomes a data: URI, so nothing
beside the .html is needed.
"""
from __future__ import annotations

import base64
import re
from pathlib import Path

import markdown

from ..model.files import publish_text

_STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; }
img { max-width: 100%; }
code { background: #f5f5f5; padding: 0 0.2em; }
h1, h2, h3 { border-bottom: 1px solid #eee; padding-bottom: 0.2em; }
"""


def _inline_images(html: str, base: Path) -> str:
    def repl(m):
        src = m.group(2)
        path = (base / src) if not src.startswith(("data:", "http:", "https:")) else None
        if path is None or not path.is_file():
            return m.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'{m.group(1)}data:image/png;base64,{data}{m.group(3)}'
    return re.sub(r'(<img[^>]*src=")([^"]+)(")', repl, html)


def write_html(pages: list[Path], out: Path, title: str = "distillguard evaluation") -> Path:
    """Concatenate markdown pages (each with its PNGs beside it) into one HTML file."""
    parts = []
    for page in pages:
        page = Path(page)
        body = markdown.markdown(page.read_text(), extensions=["tables", "fenced_code"])
        parts.append(_inline_images(body, page.parent))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    publish_text(out, f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
                   f"<style>{_STYLE}</style></head><body>\n" + "\n<hr>\n".join(parts) + "\n</body></html>\n")
    return out
