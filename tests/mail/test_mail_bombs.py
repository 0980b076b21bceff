"""Mail built to burn CPU: what would take the sanitiser or the text extractor minutes (tags
nested thousands deep, a tag with a hundred thousand attributes) or every subject rule seconds (a
megabyte of subject) is read in one pass, flagged, and shown by its text."""

from portal.mail.classify import classify
from portal.mail.html_body import MAX_HTML_ATTRIBUTES, MAX_HTML_DEPTH, html_too_complex
from portal.mail.parse import parse_email
from portal.mail.parse.headers import MANY_RECIPIENTS, MAX_SUBJECT


def html_mail(html: str, subject: str = "html") -> bytes:
    return (f"From: alice@contoso.com\r\nTo: support@acme.example\r\nSubject: {subject}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n").encode()


def test_tags_nested_a_hundred_thousand_deep_are_shown_as_text():
    parsed = parse_email(html_mail("<div>" * 100_000 + "the printer is down" + "</div>" * 100_000))
    assert parsed.html is None and parsed.html_safe is None
    assert "the printer is down" in parsed.text and parsed.text_from_html
    assert f"the HTML body nests tags more than {MAX_HTML_DEPTH} deep: shown as plain text" in parsed.defects


def test_a_tag_with_a_hundred_thousand_attributes_is_shown_as_text():
    attributes = " ".join(f'a{i}="{i}"' for i in range(100_000))
    parsed = parse_email(html_mail(f"<p {attributes}>call me</p>"))
    assert parsed.html is None and parsed.text == "call me"
    assert any(f"more than {MAX_HTML_ATTRIBUTES} attributes" in d for d in parsed.defects)


def test_ordinary_html_is_left_to_the_sanitiser():
    # Outlook nests tables some forty deep and leaves <p>, <td>, <li> and <br> unclosed by the thousand.
    outlook = "<table><tr><td>" * 40 + "deep cell" + "</td></tr></table>" * 40
    sloppy = "<ul>" + "<li>item<br>" * 5_000 + "</ul>" + "<p>para" * 5_000
    for html in (outlook, sloppy, "<img src=x/>" * 2_000, "<p " + 'a="1" ' * MAX_HTML_ATTRIBUTES + ">ok</p>"):
        assert html_too_complex(html) is None
        parsed = parse_email(html_mail(html))
        assert parsed.html is not None and not any("HTML body" in d for d in parsed.defects)


def test_self_closing_and_closed_tags_do_not_add_up():
    assert html_too_complex("<div><span/></div>" * 10_000) is None
    assert html_too_complex("<div>" * (MAX_HTML_DEPTH + 1)) is not None
    assert html_too_complex("<div>" * MAX_HTML_DEPTH) is None


def test_a_megabyte_of_subject_is_cut_before_any_rule_reads_it():
    parsed = parse_email(html_mail("<p>hi</p>", subject="Out of office " + "word " * 200_000))
    assert len(parsed.subject) == MAX_SUBJECT
    assert f"subject longer than {MAX_SUBJECT:,} characters: cut there" in parsed.defects
    assert classify(parsed).out_of_office  # still read as what it says it is


def test_ten_thousand_recipients_are_all_read_and_the_mail_says_so():
    to = ", ".join(f"user{i}@r{i % 97}.example" for i in range(10_000))
    parsed = parse_email(f"From: a@b.example\r\nTo: {to}\r\nSubject: x\r\n\r\nhi\r\n".encode())
    assert len(parsed.to) == 10_000 and parsed.to[-1].address == "user9999@r8.example"
    assert f"10,000 recipients in To and Cc, more than {MANY_RECIPIENTS:,}: all kept" in parsed.defects


def test_a_large_but_ordinary_recipient_list_is_not_flagged():
    to = ", ".join(f"user{i}@r.example" for i in range(MANY_RECIPIENTS // 2))
    cc = ", ".join(f"copy{i}@r.example" for i in range(MANY_RECIPIENTS // 2))
    parsed = parse_email(f"From: a@b.example\r\nTo: {to}\r\nCc: {cc}\r\nSubject: x\r\n\r\nhi\r\n".encode())
    assert len(parsed.to) + len(parsed.cc) == MANY_RECIPIENTS
    assert not any("recipients" in d for d in parsed.defects)


def test_a_template_that_makes_such_html_is_refused_before_css_inlining_and_the_text_part():
    from portal.mail.render import TemplateError, render, sample_context, validate_template

    attributes = "Subject\n<p {% for i in range(5000) %} a{{ i }}=1{% endfor %}>hi</p>"
    deep = "Subject\n{% for i in range(5000) %}<div>{% endfor %}hi"
    for source, words in ((attributes, "the HTML it makes has a tag with more than 200 attributes"),
                          (deep, "the HTML it makes nests tags more than 500 deep")):
        try:
            render((None, source), sample_context())
        except TemplateError as exc:
            assert words in str(exc)
        else:
            raise AssertionError("rendered")
        assert any(words in p.message for p in validate_template(None, source))


def test_the_sanitiser_itself_refuses_the_work_for_every_caller():
    # Stored bodies, technicians' replies and canned responses all pass through it.
    from portal.mail.sanitize import sanitize_html

    shown = sanitize_html("<div>" * 50_000 + "<b>a & b</b><script>x</script>" + "</div>" * 50_000)
    assert shown == "<p>a &amp; b x</p>"
    assert sanitize_html("<div><b>fine</b></div>") == "<div><b>fine</b></div>"
