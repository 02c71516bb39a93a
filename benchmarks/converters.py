"""Which library should turn documents as people keep them into text? The candidates side by side.

    pip install -e '.[test]' pypdf pdfminer.six pdfplumber pymupdf reportlab
    python benchmarks/converters.py [--real-pdfs DIR] [--html-eval DIR] [--out benchmarks/results/converters.json]
    python benchmarks/converters.py --write-folder DIR    # the demo documents as a user keeps them

1. Known text: the ten demo documents written by the libraries that write such files
   (tests/kept_documents.py): as one handbook of many small pages, each with a running header, a
   footer and its page number, in PDF by fpdf2, by reportlab, and by LibreOffice from a Word file
   (when `soffice` is installed); and each on its own, in Word (header and footer), PowerPoint,
   EPUB, and as a saved web page (navigation, a cookie banner, scripts and a footer around it).
   Per candidate: the share of the documents' sentences found whole in its text, the furniture
   lines it kept, and seconds per file. PDF candidates are scored on their own text and after
   promptdistill's furniture filter (`convert.page_text`), which any of them could feed.
2. Real PDFs (--real-pdfs, every .pdf below DIR): milliseconds per page, and the files each fails on.
3. Real web pages (--html-eval: a folder holding trafilatura's evaluation set, evaldata.json and
   its pages): the share of main-text snippets kept and of boilerplate snippets left out.
Prints tables and writes JSON; docs/documents.md records a run.

--write-folder writes the demo documents as PDFs, Word files, saved web pages, a slide deck and an
e-book, each with its furniture, under their demo names (so the demo's test questions fit them).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import kept_documents as kept  # noqa: E402  (the tests' writers: one copy of each)

from promptdistill.convert import page_text, web_page_text  # noqa: E402

FURNITURE = (kept.HEADER, kept.FOOTER, "page 1 of", "page 2 of", kept.COOKIES, kept.SITE_FOOTER, "dataLayer",
             *kept.NAVIGATION[1:])  # "Home" is a word of the documents


def demo_documents() -> dict[str, tuple[str, list[str]]]:
    """{name: (title, paragraphs)} of the bundled demo documents."""
    folder = Path(str(resources.files("promptdistill") / "demo" / "docs"))
    documents = {}
    for path in sorted(folder.glob("*.md")):
        blocks = [block.strip() for block in path.read_text().split("\n\n") if block.strip()]
        documents[path.stem] = (blocks[0].lstrip("# "), blocks[1:])
    return documents


def sentences(paragraphs: list[str]) -> list[str]:
    return [s for p in paragraphs for s in re.split(r"(?<=[.!?])\s+", p) if s]


def normalise(text: str) -> str:
    text = re.sub(r"[*_#`>|]", " ", text).replace("\u2019", "'").replace("\u00a0", " ")
    return " ".join(text.split()).lower()


def write_reportlab(path: Path, paragraphs: list[str]) -> Path:
    from reportlab.lib.pagesizes import A6
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    def furniture(canvas, document):
        canvas.saveState()
        canvas.setFont("Helvetica-Oblique", 7)
        canvas.drawCentredString(A6[0] / 2, A6[1] - 20, kept.HEADER)
        canvas.drawCentredString(A6[0] / 2, 16, f"{kept.FOOTER} - page {document.page}")
        canvas.restoreState()

    style = getSampleStyleSheet()["BodyText"]
    SimpleDocTemplate(str(path), pagesize=A6, topMargin=34, bottomMargin=34, leftMargin=24, rightMargin=24).build(
        [Paragraph(p, style) for p in paragraphs], onFirstPage=furniture, onLaterPages=furniture)
    return path


def write_files(folder: Path) -> dict[str, list[Path]]:
    """The demo documents in every format, by format ('pdf (fpdf2)', 'docx', ...): the PDFs one
    handbook each, the others a file per document."""
    documents = demo_documents()
    handbook = [block for title, paragraphs in documents.values() for block in (title, *paragraphs)]
    for name in ("fpdf2", "reportlab", "office", "docx", "pptx", "epub", "html"):
        (folder / name).mkdir()
    files = {"pdf (fpdf2)": [kept.pdf(folder / "fpdf2" / "handbook.pdf", handbook)],
             "pdf (reportlab)": [write_reportlab(folder / "reportlab" / "handbook.pdf", handbook)]}
    for name, (title, paragraphs) in documents.items():
        files.setdefault("docx", []).append(kept.docx(folder / "docx" / f"{name}.docx", title, paragraphs))
        files.setdefault("pptx", []).append(kept.pptx(folder / "pptx" / f"{name}.pptx", title, paragraphs))
        files.setdefault("epub", []).append(kept.epub(folder / "epub" / f"{name}.epub", title, paragraphs))
        page = folder / "html" / f"{name}.html"
        page.write_text(kept.web_page(title, paragraphs))
        files.setdefault("html", []).append(page)
    if shutil.which("soffice"):  # Word to PDF as people make them: LibreOffice, header, footer and all
        source = kept.docx(folder / "office" / "handbook.docx", handbook[0], handbook[1:])
        subprocess.run(["soffice", "--headless", "--convert-to", "pdf", "--outdir", str(source.parent), str(source)],
                       check=True, capture_output=True, timeout=600)
        files["pdf (LibreOffice)"] = [source.with_suffix(".pdf")]
    return files


def write_folder(folder: Path) -> None:
    """The demo documents as a user keeps them: four PDFs, two Word files, two saved web pages (one
    as a single .mhtml file), a slide deck and an e-book."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds = ["pdf", "pdf", "pdf", "pdf", "docx", "docx", "html", "mhtml", "pptx", "epub"]
    for kind, (name, (title, paragraphs)) in zip(kinds, demo_documents().items()):
        path = folder / f"{name}.{kind}"
        if kind == "pdf":
            kept.pdf(path, [title, *paragraphs])
        elif kind == "html":
            path.write_text(kept.web_page(title, paragraphs))
        elif kind == "mhtml":
            kept.mhtml(path, kept.web_page(title, paragraphs))
        else:
            getattr(kept, kind)(path, title, paragraphs)
        print(path)


# ---- candidates: each gives a file's pages (PDF) or its text ---------------------------------

def pdfium_pages(path: Path) -> list[str]:
    import pypdfium2

    document = pypdfium2.PdfDocument(str(path))
    try:
        return [page.get_textpage().get_text_range() for page in document]
    finally:
        document.close()


def pypdf_pages(path: Path) -> list[str]:
    from pypdf import PdfReader

    return [page.extract_text() or "" for page in PdfReader(str(path)).pages]


def pdfminer_pages(path: Path) -> list[str]:
    from pdfminer.high_level import extract_text

    return extract_text(str(path)).split("\f")


def pdfplumber_pages(path: Path) -> list[str]:
    import pdfplumber

    with pdfplumber.open(str(path)) as pdf:
        return [page.extract_text() or "" for page in pdf.pages]


def pymupdf_pages(path: Path) -> list[str]:
    import pymupdf

    with pymupdf.open(str(path)) as document:
        return [page.get_text() for page in document]


PDF_CANDIDATES = {"pypdfium2": pdfium_pages, "pypdf": pypdf_pages, "pdfminer.six": pdfminer_pages,
                  "pdfplumber": pdfplumber_pages, "pymupdf (AGPL)": pymupdf_pages}


def markitdown_any(path: Path) -> str:
    """markitdown as its README has it: any file, the converter chosen for it."""
    from markitdown import MarkItDown

    return MarkItDown(enable_plugins=False).convert_local(str(path)).markdown


def trafilatura_ours(path: Path) -> str:
    try:
        return web_page_text(path, path.read_bytes())
    except Exception:  # noqa: BLE001 - promptdistill refuses a page without main text
        return ""


def trafilatura_default(path: Path) -> str:
    import trafilatura

    return trafilatura.extract(path.read_bytes()) or ""


def soup_text(path: Path) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(path.read_bytes(), "html.parser")
    for tag in soup(["script", "style"]):
        tag.extract()
    return soup.get_text("\n")


def python_docx_text(path: Path) -> str:
    import docx

    return "\n\n".join(paragraph.text for paragraph in docx.Document(str(path)).paragraphs)


def python_pptx_text(path: Path) -> str:
    from pptx import Presentation

    return "\n\n".join(shape.text_frame.text for slide in Presentation(str(path)).slides
                       for shape in slide.shapes if shape.has_text_frame)


def ebooklib_text(path: Path) -> str:
    import ebooklib
    from bs4 import BeautifulSoup
    from ebooklib import epub

    book = epub.read_epub(str(path))
    return "\n\n".join(BeautifulSoup(item.get_content(), "html.parser").get_text("\n")
                       for item in book.get_items_of_type(ebooklib.ITEM_DOCUMENT))


OTHER_CANDIDATES = {
    "docx": {"markitdown (mammoth)": markitdown_any, "python-docx paragraphs": python_docx_text},
    "pptx": {"markitdown (python-pptx)": markitdown_any, "python-pptx text frames": python_pptx_text},
    "epub": {"markitdown": markitdown_any, "ebooklib + BeautifulSoup": ebooklib_text},
    "html": {"trafilatura (promptdistill's settings)": trafilatura_ours, "trafilatura (default)": trafilatura_default,
             "markitdown (markdownify)": markitdown_any, "BeautifulSoup get_text": soup_text},
}


# ---- measurements --------------------------------------------------------------------------

def score(texts: dict[str, str], seconds: float) -> dict:
    """The sentences each text (by file stem: a document's name, or handbook) kept whole, and its furniture."""
    truth = {name: paragraphs for name, (_, paragraphs) in demo_documents().items()}
    truth["handbook"] = [p for paragraphs in truth.values() for p in paragraphs]
    found = total = kept_furniture = 0
    for name, text in texts.items():
        wanted = [normalise(s) for s in sentences(truth[name])]
        have = normalise(text)
        found += sum(s in have for s in wanted)
        total += len(wanted)
        kept_furniture += sum(have.count(normalise(line)) for line in FURNITURE)
    return {"sentences_kept": round(100 * found / total, 1), "furniture_lines_kept": kept_furniture,
            "ms_per_file": round(1000 * seconds / len(texts), 1)}


def timed(function, paths: list[Path]) -> tuple[dict, float]:
    function(paths[0])  # imports and first-call set-up stay out of the timing
    started = time.perf_counter()
    results = {path.stem: function(path) for path in paths}
    return results, time.perf_counter() - started


def known_text(folder: Path) -> list[dict]:
    rows = []
    for kind, paths in write_files(folder).items():
        if kind.startswith("pdf"):
            for name, pages_of in PDF_CANDIDATES.items():
                pages, seconds = timed(pages_of, paths)
                rows.append({"format": kind, "candidate": name,
                             **score({stem: "\n".join(p) for stem, p in pages.items()}, seconds)})
                cleaned, cleaning = timed(lambda path: page_text(pages[path.stem]), paths)
                rows.append({"format": kind, "candidate": f"{name} + furniture filter",
                             **score(cleaned, seconds + cleaning)})
            rows.append({"format": kind, "candidate": "markitdown (pdfminer)", **score(*timed(markitdown_any, paths))})
        else:
            for name, convert in OTHER_CANDIDATES[kind].items():
                rows.append({"format": kind, "candidate": name, **score(*timed(convert, paths))})
    return rows


def real_pdfs(folder: Path) -> list[dict]:
    paths = sorted(folder.rglob("*.pdf"))
    rows = []
    for name, pages_of in PDF_CANDIDATES.items():
        pages = seconds = 0.0
        failed, empty = [], []
        for path in paths:
            started = time.perf_counter()
            try:
                text = pages_of(path)
            except Exception as error:  # noqa: BLE001 - what each library does with a hard file is the point
                failed.append(f"{path.name}: {type(error).__name__}")
                continue
            seconds += time.perf_counter() - started
            pages += len(text)
            if not "".join(text).strip():
                empty.append(path.name)
        rows.append({"candidate": name, "files": len(paths), "pages": int(pages),
                     "ms_per_page": round(1000 * seconds / max(pages, 1), 1), "failed": failed, "no_text": empty})
    return rows


def real_pages(folder: Path, limit: int) -> list[dict]:
    evaluation = json.loads((folder / "evaldata.json").read_text())
    cases = []
    for entry in evaluation.values():
        path = next((p for p in (folder / "eval" / entry["file"], folder / "cache" / entry["file"]) if p.is_file()),
                    None)
        if path is not None:
            cases.append((path, entry))
    cases = cases[:limit]
    rows = []
    for name, convert in OTHER_CANDIDATES["html"].items():
        kept_text = wanted = left_out = unwanted = empty = 0
        started = time.perf_counter()
        for path, entry in cases:
            have = normalise(convert(path))
            empty += not have
            kept_text += sum(normalise(s) in have for s in entry["with"])
            wanted += len(entry["with"])
            left_out += sum(normalise(s) not in have for s in entry["without"])
            unwanted += len(entry["without"])
        rows.append({"candidate": name, "pages": len(cases), "main_text_kept": round(100 * kept_text / wanted, 1),
                     "boilerplate_left_out": round(100 * left_out / unwanted, 1), "no_text": empty,
                     "ms_per_page": round(1000 * (time.perf_counter() - started) / len(cases), 1)})
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    shown = [{key: len(value) if isinstance(value, list) else value for key, value in row.items()} for row in rows]
    columns = list(shown[0])
    widths = [max(len(c), *(len(str(r[c])) for r in shown)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in shown:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real-pdfs", type=Path, help="a folder of real PDFs (searched recursively)")
    parser.add_argument("--html-eval", type=Path, help="trafilatura's evaluation set: evaldata.json, eval/, cache/")
    parser.add_argument("--pages", type=int, default=1000, help="at most this many real web pages")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/converters.json"))
    parser.add_argument("--write-folder", type=Path, help="only write the demo documents as a user keeps them")
    args = parser.parse_args()
    if args.write_folder:
        write_folder(args.write_folder)
        return

    results: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        results["known_text"] = known_text(Path(folder))
    print_table("Known text: the demo documents written as files", results["known_text"])
    if args.real_pdfs:
        results["real_pdfs"] = real_pdfs(args.real_pdfs)
        print_table(f"Real PDFs ({args.real_pdfs})", results["real_pdfs"])
    if args.html_eval:
        results["real_pages"] = real_pages(args.html_eval, args.pages)
        print_table("Real web pages (trafilatura's evaluation set)", results["real_pages"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
