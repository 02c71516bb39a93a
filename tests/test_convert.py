"""Documents as people keep them, written by real writers (kept_documents.py), read back as the
text a reader sees: every sentence, and none of the page furniture."""

import logging
import re
from importlib import resources
from pathlib import Path

import pytest

import kept_documents as kept
from promptdistill import convert
from promptdistill.convert import Unreadable, page_text
from promptdistill.corpus import read_documents
from promptdistill.files import BatchStore

DEMO = Path(str(resources.files("promptdistill") / "demo" / "docs"))


def demo_paragraphs(name: str) -> tuple[str, list[str]]:
    blocks = [block.strip() for block in (DEMO / f"{name}.md").read_text().split("\n\n") if block.strip()]
    return blocks[0].lstrip("# "), blocks[1:]


def sentences(paragraphs: list[str]) -> list[str]:
    return [s for paragraph in paragraphs for s in re.split(r"(?<=[.!?])\s+", paragraph)]


def flat(text: str) -> str:
    return " ".join(text.split())


def test_a_multi_page_pdf_keeps_every_sentence_and_loses_its_running_header_and_page_numbers(tmp_path):
    paragraphs = [paragraph for name in ("harbor-town-velmora", "quenneth-stew", "corvane-lily")
                  for paragraph in demo_paragraphs(name)[1]]
    path = kept.pdf(tmp_path / "handbook.pdf", paragraphs)
    import pypdfium2

    assert len(pypdfium2.PdfDocument(str(path))) >= 3  # the header and footer repeat on every page
    text = convert.convert(path)
    assert all(sentence in flat(text) for sentence in sentences(paragraphs))
    assert kept.HEADER not in text and kept.FOOTER not in text and "page 2 of" not in text
    # Paragraphs stay apart, and one that runs over a page break stays whole.
    assert [flat(block) for block in text.split("\n\n")] == paragraphs


def test_page_text_drops_furniture_only_at_a_page_s_edges_and_joins_a_paragraph_s_lines():
    pages = ["Acme Manual\nThe lamp of the old lighthouse was lit at\ndusk by the keeper.\nThe keeper kept a careful and detailed\n3",
             "Acme Manual\nlog of every ship that passed the point,\nand the Acme Manual says he rang the\nbell.\n4",
             "Acme Manual\n- a brass bell\n- a lamp\nPage 5 of 9"]
    assert page_text(pages).split("\n\n") == [
        "The lamp of the old lighthouse was lit at dusk by the keeper.",  # ends where "The" would have fit
        "The keeper kept a careful and detailed log of every ship that passed the point, and the Acme Manual says "
        "he rang the bell.",
        "- a brass bell", "- a lamp\n"]
    assert page_text(["Acme Manual\nOnly page"]) == "Acme Manual Only page\n"  # one page: no furniture


def test_word_keeps_its_body_and_drops_its_header_and_footer(tmp_path):
    title, paragraphs = demo_paragraphs("brindlewick-lamp-company")
    text = convert.convert(kept.docx(tmp_path / "lamps.docx", title, paragraphs))
    assert title in text and all(sentence in flat(text) for sentence in sentences(paragraphs))
    assert kept.HEADER not in text and kept.FOOTER not in text


@pytest.mark.parametrize("suffix", [".html", ".mhtml"])
def test_a_saved_web_page_keeps_its_article_and_drops_navigation_banner_scripts_and_footer(tmp_path, suffix):
    title, paragraphs = demo_paragraphs("corvane-lily")
    page = kept.web_page(title, paragraphs)
    path = tmp_path / f"lily{suffix}"
    if suffix == ".html":
        path.write_text(page)
    else:
        kept.mhtml(path, page)
    text = convert.convert(path)
    assert all(sentence in flat(text) for sentence in sentences(paragraphs))
    for furniture in (kept.COOKIES, kept.SITE_FOOTER, "dataLayer", *kept.NAVIGATION):
        assert furniture not in text


def test_slides_and_ebooks_keep_their_text(tmp_path):
    title, paragraphs = demo_paragraphs("skaldmoor-nephometer")
    for path in (kept.pptx(tmp_path / "talk.pptx", title, paragraphs),
                 kept.epub(tmp_path / "book.epub", title, paragraphs)):
        text = convert.convert(path)
        assert all(sentence in flat(text) for sentence in sentences(paragraphs)), path.name
        assert "<!--" not in text  # slide numbers are markup, not text


@pytest.mark.parametrize("case, line", [
    ("scan", "the PDF has no text layer (a scan?); run OCR on it first"),
    ("pdf password", "the PDF is password-protected; save a copy without the password"),
    ("word password", "the file is password-protected (or an old .doc/.ppt renamed); save a copy without the password"),
    ("broken pdf", "not a readable PDF (Failed to load document (PDFium: Data format error).)"),
    ("broken word", "cannot be read as .docx (BadZipFile: File is not a zip file); open it and save it again"),
    ("binary text", "not text in any encoding we know (binary data?); save it as UTF-8 text"),
    ("empty text", "bad.md: the file is empty"),
])
def test_a_document_without_text_is_one_warning_naming_it_and_the_others_go_on(tmp_path, caplog, case, line):
    title, paragraphs = demo_paragraphs("quenneth-stew")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("The harbour opens at six.")
    bad = {"scan": lambda: kept.scanned_pdf(folder / "bad.pdf", "Velmora was founded in 1623."),
           "pdf password": lambda: kept.pdf(folder / "bad.pdf", paragraphs, password="s3cret"),
           "word password": lambda: kept.docx(folder / "bad.docx", title, paragraphs, password="s3cret"),
           "broken pdf": lambda: (folder / "bad.pdf").write_bytes(
               kept.pdf(tmp_path / "whole.pdf", paragraphs).read_bytes()[:1500]),
           "broken word": lambda: (folder / "bad.docx").write_bytes(b"PK\x03\x04 not really a zip"),
           "binary text": lambda: (folder / "bad.txt").write_bytes(b"text\x00" + bytes(range(256)) * 8),
           "empty text": lambda: (folder / "bad.md").write_text("\n  \n")}
    bad[case]()
    with caplog.at_level(logging.WARNING):
        documents = read_documents(folder)
    assert [document.id for document in documents] == ["notes"]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and line in warnings[0] and "bad." in warnings[0] and "\n" not in warnings[0]


def test_a_folder_whose_documents_all_fail_is_one_error(tmp_path):
    from promptdistill.errors import UserError

    kept.scanned_pdf(tmp_path / "scan.pdf", "nothing to read")
    with pytest.raises(UserError, match=r"none of its 1 document\(s\) gives text"):
        read_documents(tmp_path)


@pytest.mark.parametrize("encoding, data", [
    ("utf-8 with a byte-order mark and CRLF", "\ufeffCafé au lait.\r\nServed at dawn.\r\n".encode("utf-8")),
    ("utf-16 (Notepad's Unicode)", "\ufeffCafé au lait.\r\nServed at dawn.\r\n".encode("utf-16-le")),
    ("windows-1252", "Café au lait.\r\nServed at dawn.\r\n".encode("cp1252")),
])
def test_a_text_file_is_read_as_windows_editors_save_it(tmp_path, caplog, encoding, data):
    path = tmp_path / "menu.txt"
    path.write_bytes(data)
    with caplog.at_level(logging.WARNING):
        assert convert.convert(path) == "Café au lait.\nServed at dawn.\n"
    assert ("read as" in caplog.text) == (encoding == "windows-1252")  # a guessed encoding is said


def test_test_questions_and_settings_saved_by_windows_editors_are_read(tmp_path):
    from promptdistill.config import resolve_config
    from promptdistill.corpus import read_test_questions

    questions = tmp_path / "tests.jsonl"
    questions.write_bytes(b'\xef\xbb\xbf{"question": "Who?", "answers": ["Tobin"], "doc_id": "town"}\r\n\r\n')
    assert [q.answers for q in read_test_questions(questions, {"town"})] == [["Tobin"]]
    settings = tmp_path / "settings.yaml"
    settings.write_bytes("train:\r\n  epochs: 3\r\n".encode("utf-16"))
    assert resolve_config(settings).train.epochs == 3


def test_a_changed_file_is_converted_again_and_only_it(tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    title, paragraphs = demo_paragraphs("corvane-lily")
    kept.docx(folder / "lily.docx", title, paragraphs)
    (folder / "lily-notes.html").write_text(kept.web_page(title, paragraphs[:1]))
    (folder / "notes.md").write_text("The lily flowers in June.")
    converted = []
    real = convert.convert
    monkeypatch.setattr(convert, "convert", lambda path: converted.append(path.name) or real(path))
    store_path = tmp_path / "documents.jsonl"

    def read():
        with BatchStore(store_path) as store:
            return {document.id: document.text for document in read_documents(folder, store=store)}

    first = read()
    assert sorted(converted) == ["lily-notes.html", "lily.docx", "notes.md"]
    converted.clear()
    assert read() == first and converted == []
    (folder / "notes.md").write_text("The lily flowers in July.")
    assert read()["notes"] == "The lily flowers in July." and converted == ["notes.md"]


def test_a_saved_page_s_resource_folder_is_not_listed_and_two_files_of_one_name_are_refused(tmp_path, caplog):
    from promptdistill.errors import UserError

    (tmp_path / "article.html").write_text(kept.web_page("Lily", ["The lily flowers in June, by the marsh."]))
    (tmp_path / "article_files").mkdir()
    (tmp_path / "article_files" / "app.js").write_text("var x;")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8")
    with caplog.at_level(logging.WARNING):
        assert [document.id for document in read_documents(tmp_path)] == ["article"]
    assert "skipped 1 file(s) that are not documents" in caplog.text and "photo.jpg" in caplog.text
    assert "app.js" not in caplog.text
    (tmp_path / "article.md").write_text("Lily.")
    with pytest.raises(UserError, match="article.html and .*article.md would both be document 'article'; rename one"):
        read_documents(tmp_path)
