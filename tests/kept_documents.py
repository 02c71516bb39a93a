"""Documents as people keep them, written by the libraries that write such files: fpdf2 (PDF),
python-docx (Word), python-pptx (PowerPoint), ebooklib (EPUB), msoffcrypto-tool (a password on a
Word file), and a web page as a browser saves it. The tests read them back through convert.py."""

from __future__ import annotations

import email.message
from pathlib import Path

HEADER = "Velmora Harbour Board - Visitor Handbook"
FOOTER = "Printed for the harbour office"
COOKIES = "We use cookies to give you the best experience on our site"
NAVIGATION = ["Home", "Harbour news", "Ferry timetable", "Contact us"]
SITE_FOOTER = "Copyright 2026 Velmora Gazette. All rights reserved."


def pdf(path: Path, paragraphs: list[str], header: str = HEADER, password: str = "") -> Path:
    """Small pages (A7), so that a few paragraphs run over several; each page has a running header
    and a footer with its page number, as a word processor prints them."""
    from fpdf import FPDF

    class Handbook(FPDF):
        def header(self):
            self.set_font("Helvetica", "I", 8)
            self.cell(0, 6, header, align="C", new_x="LMARGIN", new_y="NEXT")

        def footer(self):
            self.set_y(-12)
            self.set_font("Helvetica", "I", 8)
            self.cell(0, 5, f"{FOOTER} - page {self.page_no()} of {{nb}}", align="C")

    document = Handbook(format=(74, 105))
    if password:
        document.set_encryption(owner_password=password, user_password=password)
    document.set_margins(8, 8)
    document.set_auto_page_break(True, margin=14)
    document.add_page()
    document.set_font("Helvetica", size=10)
    for paragraph in paragraphs:
        document.multi_cell(0, 5, paragraph, new_x="LMARGIN", new_y="NEXT")
        document.ln(3)
    document.output(str(path))
    return path


def scanned_pdf(path: Path, text: str) -> Path:
    """A page as a scanner makes it: a picture of the text, with no text layer."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (600, 200), "white")
    ImageDraw.Draw(picture).text((20, 80), text, fill="black")
    document = FPDF()
    document.add_page()
    document.image(picture, x=10, y=10, w=180)
    document.output(str(path))
    return path


def docx(path: Path, title: str, paragraphs: list[str], password: str = "") -> Path:
    """A Word document with a header and a footer on every page (and, with `password`, encrypted
    as Word encrypts it)."""
    import docx as python_docx

    document = python_docx.Document()
    document.sections[0].header.paragraphs[0].text = HEADER
    document.sections[0].footer.paragraphs[0].text = FOOTER
    document.add_heading(title, level=1)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if not password:
        document.save(str(path))
        return path
    import msoffcrypto.format.ooxml

    plain = path.with_name(f"{path.stem}.plain.docx")
    document.save(str(plain))
    with open(plain, "rb") as source, open(path, "wb") as target:
        msoffcrypto.format.ooxml.OOXMLFile(source).encrypt(password, target)
    plain.unlink()
    return path


def pptx(path: Path, title: str, paragraphs: list[str]) -> Path:
    """A slide for each paragraph, under the deck's title."""
    from pptx import Presentation

    deck = Presentation()
    for paragraph in paragraphs:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text_frame.text = paragraph
    deck.save(str(path))
    return path


def epub(path: Path, title: str, paragraphs: list[str]) -> Path:
    from ebooklib import epub as ebook

    book = ebook.EpubBook()
    book.set_identifier(path.stem)
    book.set_title(title)
    book.set_language("en")
    chapter = ebook.EpubHtml(title=title, file_name="chapter.xhtml", lang="en")
    chapter.content = f"<h1>{title}</h1>" + "".join(f"<p>{paragraph}</p>" for paragraph in paragraphs)
    book.add_item(chapter)
    book.toc = [chapter]
    book.spine = ["nav", chapter]
    book.add_item(ebook.EpubNcx())
    book.add_item(ebook.EpubNav())
    ebook.write_epub(str(path), book)
    return path


def web_page(title: str, paragraphs: list[str]) -> str:
    """An article as a browser saves its page: navigation, a cookie banner, scripts and a footer around it."""
    links = "".join(f'<li><a href="/{n}">{item}</a></li>' for n, item in enumerate(NAVIGATION))
    body = "".join(f"<p>{paragraph}</p>" for paragraph in paragraphs)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title} - Velmora Gazette</title>'
            "<script>window.dataLayer = window.dataLayer || [];</script></head><body>"
            f'<header><nav><ul>{links}</ul></nav></header><div class="cookie-banner"><p>{COOKIES}.</p>'
            f"<button>Accept</button></div><main><article><h1>{title}</h1>{body}</article></main>"
            f'<footer><p>{SITE_FOOTER}</p></footer><script src="/app.js"></script></body></html>')


def mhtml(path: Path, page: str) -> Path:
    """A page saved as one file (Chrome's "Webpage, Single File"): a MIME message, quoted-printable."""
    message = email.message.EmailMessage()
    message["Subject"] = "saved page"
    message["Snapshot-Content-Location"] = "https://example.org/velmora"
    message.set_content(page, subtype="html", cte="quoted-printable")
    message.make_related()
    path.write_bytes(bytes(message))
    return path
