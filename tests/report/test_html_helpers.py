"""The report's HTML helpers: our Markdown tables become escaped HTML tables."""
from html.parser import HTMLParser

from cxrdistill.report.html import markdown_tables


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.cells, self._in = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in = tag in ("td", "th", "h3", "p")

    def handle_endtag(self, tag):
        self._in = False

    def handle_data(self, data):
        if self._in:
            self.cells.append(data)


def test_markdown_tables_to_escaped_html():
    md = ("### observed labels, attribute race\n\n| method | auc |\n|---|---|\n| erm | 0.793 ± 0.003 |\n"
          "| <script>alert(1)</script> | 0.5 |\n\n**true labels**\n\n| method | auc |\n|---|---|\n| erm | 0.8 |\n"
          "\nTasks: a, b.\n")
    html = markdown_tables(md)
    p = _Cells()
    p.feed(html)
    assert p.tags.count("table") == 2 and p.tags.count("h3") == 2 and "script" not in p.tags
    assert p.cells[:6] == ["observed labels, attribute race", "method", "auc", "erm", "0.793 ± 0.003",
                           "<script>alert(1)</script>"]
    assert "true labels" in p.cells and "Tasks: a, b." in p.cells
    assert "---" not in html
