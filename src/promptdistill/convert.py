"""Documents as people keep them, turned into the text a reader of them sees.

    .pdf                  pypdfium2 (PDFium, Chrome's PDF engine) gives each page's text; lines that
                          repeat at the top or bottom of the pages (running headers and footers,
                          page numbers) are dropped and the lines of a paragraph joined (`page_text`)
    .html .htm .xhtml     trafilatura keeps a saved web page's main text: no navigation, scripts,
    .mhtml .mht           cookie banners, footers or readers' comments
    .docx .pptx .epub     markitdown (mammoth for Word, whose headers and footers are not its body)
    .txt .md .markdown    as saved: UTF-8, or UTF-16 with its byte-order mark, else the encoding
                          charset-normalizer finds (the log names it)

docs/documents.md has the measurements behind each choice (benchmarks/converters.py). A file that
gives no text (a scanned PDF, a password, a broken file) raises `Unreadable`, whose message says
what to do; a folder's other documents go on without it.
"""

from __future__ import annotations

import email
import logging
import re
import statistics
from pathlib import Path

from promptdistill.errors import UserError
from promptdistill.files import decode_text

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
WEB_PAGE_SUFFIXES = (".html", ".htm", ".xhtml", ".mhtml", ".mht")
SUFFIXES = (*TEXT_SUFFIXES, ".pdf", *WEB_PAGE_SUFFIXES, ".docx", ".pptx", ".epub")  # in any case: .PDF

# With digits masked as '#', a line a page number stands on alone: "#", "Page # of #", "- # -", "iv".
PAGE_NUMBER = re.compile(r"^(page\s*)?(#|[ivxlcdm]+)(\s*(of|/)\s*#)?$|^[-–—]\s*#\s*[-–—]$")
LIST_ITEM = re.compile(r"^([•●▪◦‣∙*–-]|\(?\d{1,3}[.)]|\(?[a-z][.)])\s")
EDGE_LINES = 2  # lines at the top and at the bottom of a page that can be furniture
HYPHENATED = "\ufffe"  # where PDFium joined a word hyphenated at a line's end
SENTENCE_END = (".", "!", "?", ":", '"', "\u201d")
ENCRYPTED_OFFICE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # a password wraps .docx/.pptx in this (OLE) format


class Unreadable(UserError):
    """A document that gives no text; the message names the file and what to do."""


def convert(path: Path) -> str:
    """The text of one document, chosen by its suffix (one of SUFFIXES)."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return read_text_file(path)
    if suffix == ".pdf":
        return pdf_text(path)
    if suffix in (".mhtml", ".mht"):
        return web_page_text(path, saved_page(path))
    if suffix in WEB_PAGE_SUFFIXES:
        return web_page_text(path, path.read_bytes())
    return markitdown_text(path)


def read_text_file(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise Unreadable(f"{path}: the file is empty")
    try:
        text = decode_text(data)
        if "\x00" not in text:
            return text
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = None if b"\x00" in data else from_bytes(data).best()  # NUL: binary, whatever it decodes to
    if best is None:
        raise Unreadable(f"{path}: not text in any encoding we know (binary data?); save it as UTF-8 text")
    log.warning("%s: not UTF-8; read as %s", path, best.encoding)
    return decode_text(data, best.encoding)


def pdf_text(path: Path) -> str:
    import pypdfium2

    try:
        document = pypdfium2.PdfDocument(str(path))
    except pypdfium2.PdfiumError as error:
        if "password" in str(error).lower():
            raise Unreadable(f"{path}: the PDF is password-protected; save a copy without the password and "
                             "put that in the folder") from None
        raise Unreadable(f"{path}: not a readable PDF ({error}); export it again from the program that "
                         "made it") from None
    try:
        pages = [page.get_textpage().get_text_range() for page in document]
    finally:
        document.close()
    text = page_text(pages)
    if not text.strip():
        raise Unreadable(f"{path}: the PDF has no text layer (a scan?); run OCR on it first (for example "
                         "`ocrmypdf IN.pdf OUT.pdf`) and put the result in the folder")
    return text


def page_text(pages: list[str]) -> str:
    """The running text of a document's pages, paragraphs separated by blank lines.

    Furniture: a line among the first or last two of a page that stands there on three pages or
    more (on both of two), digits aside (so "Page 4 of 9" repeats), or that is a page number
    alone. Paragraphs: a writer wraps a line when the next word would not fit, so a line that
    would have had room for the next line's first word ended its paragraph (or is a heading); so
    does a line before a list item, and a page's last line after a sentence's end.
    """
    lines = [[line.strip() for line in page.replace(HYPHENATED, "").splitlines() if line.strip()] for page in pages]
    furniture = _furniture(lines)
    kept = [[line for index, line in enumerate(page)
             if not (_at_edge(index, len(page)) and (_mask(line) in furniture or PAGE_NUMBER.match(_mask(line))))]
            for page in lines]
    flowing = [(line, index == len(page) - 1) for page in kept for index, line in enumerate(page)]  # (line, last?)
    if not flowing:
        return ""
    # The page's width in characters: most wrapped lines come close to it.
    widths = [len(line) for line, _ in flowing]
    full = statistics.quantiles(widths, n=10, method="inclusive")[-1] if len(widths) > 1 else 0
    paragraphs: list[str] = []
    current = ""
    for (line, ends_page), (following, _) in zip(flowing, [*flowing[1:], ("", True)]):
        current = f"{current} {line}" if current else line
        next_word = following.split(" ", 1)[0]
        if (not following or LIST_ITEM.match(following) or len(line) + 1 + len(next_word) < 0.85 * full
                or (ends_page and line.endswith(SENTENCE_END))):
            paragraphs.append(current)
            current = ""
    return "\n\n".join(paragraphs) + "\n"


def _mask(line: str) -> str:
    return " ".join(re.sub(r"\d+", "#", line.lower()).split())


def _at_edge(index: int, count: int) -> bool:
    return index < EDGE_LINES or index >= count - EDGE_LINES


def _furniture(pages: list[list[str]]) -> set[str]:
    if len(pages) < 2:
        return set()
    seen: dict[str, int] = {}
    for page in pages:
        for line in {_mask(line) for index, line in enumerate(page) if _at_edge(index, len(page))}:
            seen[line] = seen.get(line, 0) + 1
    return {line for line, count in seen.items() if count >= min(3, len(pages))}


def saved_page(path: Path) -> bytes:
    """The HTML of a page saved as one file (.mhtml, a MIME message with the page's parts)."""
    for part in email.message_from_bytes(path.read_bytes()).walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True)
    raise Unreadable(f"{path}: a saved page without an HTML part; save the page again, as .html")


def web_page_text(path: Path, html: bytes) -> str:
    import trafilatura

    text = trafilatura.extract(html, include_comments=False)
    if not text or not text.strip():
        raise Unreadable(f"{path}: no main text found in the page; copy the text you want into a .txt file")
    return text.strip() + "\n"


def markitdown_text(path: Path) -> str:
    """A Word, PowerPoint or EPUB file through its own markitdown converter (never a guess at another format)."""
    from markitdown import StreamInfo
    from markitdown.converters import DocxConverter, EpubConverter, PptxConverter

    suffix = path.suffix.lower()
    with open(path, "rb") as file:
        if file.read(len(ENCRYPTED_OFFICE)) == ENCRYPTED_OFFICE and suffix != ".epub":
            raise Unreadable(f"{path}: the file is password-protected (or an old .doc/.ppt renamed); save a copy "
                             f"without the password, as {suffix}, and put that in the folder")
        file.seek(0)
        converter = {".docx": DocxConverter, ".pptx": PptxConverter, ".epub": EpubConverter}[suffix]()
        try:
            text = converter.convert(file, StreamInfo(extension=suffix, filename=path.name)).markdown
        except Exception as error:  # each format's library raises its own
            raise Unreadable(f"{path}: cannot be read as {suffix} ({_cause(error)}); open it and save it "
                             "again") from None
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)  # slide numbers
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)  # pictures: their file names say nothing
    if not text.strip():
        raise Unreadable(f"{path}: holds no text")
    return text.strip() + "\n"


def _cause(error: Exception) -> str:
    """What went wrong, in a line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:160]}" if lines else type(error).__name__
