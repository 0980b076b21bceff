"""cut_body: what the sender newly wrote, cut at waterlines, our marker, quotes and signatures."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.mail.cut import CutBody, cut_body
from tests.fuzzing import fuzz

MARKER = "## Please reply above this line ##"


def visible(text: str, **kw) -> str:
    return cut_body(text, **kw).text


# --- quoted history, per language ---------------------------------------------------------

ATTRIBUTIONS = {
    "en": "On Mon, Jan 8, 2024 at 10:02 AM, Bob Smith <bob@example.com> wrote:",
    "en-wrapped": "On Mon, Jan 8, 2024 at 10:02 AM, Bob Smith from Example Support\n<bob@example.com> wrote:",
    "de": "Am 08.01.2024 um 10:02 schrieb Bob Smith <bob@example.com>:",
    "fr": "Le lun. 8 janv. 2024 à 10:02, Bob Smith <bob@example.com> a écrit :",
    "es": "El lun, 8 ene 2024 a las 10:02, Bob Smith (<bob@example.com>) escribió:",
    "nl": "Op ma 8 jan. 2024 om 10:02 schreef Bob Smith <bob@example.com>:",
    "pt": "Em seg., 8 de jan. de 2024 às 10:02, Bob Smith <bob@example.com> escreveu:",
    "it": "Il giorno lun 8 gen 2024 alle ore 10:02 Bob Smith <bob@example.com> ha scritto:",
    "sv": "Den 8 jan. 2024 kl. 10:02 skrev Bob Smith <bob@example.com>:",
    "da": "Den 8. jan. 2024 kl. 10.02 skrev Bob Smith <bob@example.com>:",
    "pl": "W dniu 8.01.2024 o 10:02, Bob Smith <bob@example.com> napisał:",
    "ja": "2024/01/08 10:02、Bob Smith <bob@example.com> のメッセージ:",
    "ru": "8 янв. 2024 г., в 10:02, Bob Smith <bob@example.com> написал(а):",
    "zh": "在 2024年1月8日 10:02，Bob Smith <bob@example.com> 写道：",
    "cs": "Dne 8. 1. 2024 10:02 napsal Bob Smith <bob@example.com>:",
    "fi": "ma 8.1.2024 klo 10.02 Bob Smith (bob@example.com) kirjoitti:",
    "android": "---- Bob Smith wrote ----",
    "iso-date": "2024-01-08 10:02 GMT+01:00 Bob Smith <bob@example.com>:",
}


@pytest.mark.parametrize("lang", sorted(ATTRIBUTIONS))
def test_attribution_followed_by_quote_is_cut(lang):
    body = f"The printer works again, thanks.\n\n{ATTRIBUTIONS[lang]}\n\n> Did you restart it?\n> Bob\n"
    out = cut_body(body)
    assert out.text == "The printer works again, thanks."
    assert out.cut_at == "quote"


@pytest.mark.parametrize("lang", ["en", "de", "fr", "nl", "pl", "sv"])
def test_attribution_followed_by_unquoted_history_is_cut(lang):
    # Apple Mail / Outlook mobile put the old message below the header without '>'
    body = f"Done.\n\n{ATTRIBUTIONS[lang]}\n\nPlease restart the printer.\n"
    assert visible(body) == "Done."


HEADER_BLOCKS = {
    "en": (
        "From: Bob Smith <bob@example.com>\nSent: Monday, January 8, 2024 10:02 AM\nTo: Support\n"
        "Subject: Printer"
    ),
    "en-bold": (
        "*From:* Bob Smith [mailto:\n  bob@example.com]\n"
        "*Sent:* Monday, January 8, 2024 10:02 AM\n*To:* Support\n*Subject:* Printer"
    ),
    "de": (
        "Von: Bob Smith <bob@example.com>\nGesendet: Montag, 8. Januar 2024 10:02\nAn: Support\n"
        "Betreff: Drucker"
    ),
    "fr": (
        "De : Bob Smith [mailto:bob@example.com]\nEnvoyé : lundi 8 janvier 2024 10:02\n"
        "À : Support\nObjet : Imprimante"
    ),
    "es": (
        "De: Bob Smith <bob@example.com>\nEnviado: lunes, 8 de enero de 2024 10:02\n"
        "Para: Soporte\nAsunto: Impresora"
    ),
    "nl": (
        "Van: Bob Smith <bob@example.com>\nVerzonden: maandag 8 januari 2024 10:02\n"
        "Aan: Support\nOnderwerp: Printer"
    ),
    "pt": (
        "De: Bob Smith <bob@example.com>\nEnviada em: segunda-feira, 8 de janeiro de 2024 10:02\n"
        "Para: Suporte\nAssunto: Impressora"
    ),
    "it": (
        "Da: Bob Smith <bob@example.com>\nInviato: lunedì 8 gennaio 2024 10:02\nA: Supporto\n"
        "Oggetto: Stampante"
    ),
    "sv": (
        "Från: Bob Smith <bob@example.com>\nSkickat: den 8 januari 2024 10:02\nTill: Support\n"
        "Ämne: Skrivare"
    ),
    "da": "Fra: Bob Smith <bob@example.com>\nSendt: 8. januar 2024 10:02\nTil: Support\nEmne: Printer",
    "pl": (
        "Od: Bob Smith <bob@example.com>\nWysłano: poniedziałek, 8 stycznia 2024 10:02\n"
        "Do: Wsparcie\nTemat: Drukarka"
    ),
    "date-first": "Date: Mon, 8 Jan 2024 10:02:00 +0100\nTo: support@example.com",
}


@pytest.mark.parametrize("lang", sorted(HEADER_BLOCKS))
def test_outlook_header_block_is_cut(lang):
    body = f"Thanks, that fixed it.\n\n{HEADER_BLOCKS[lang]}\n\nThe printer on floor 2 is broken.\n"
    out = cut_body(body)
    assert out.text == "Thanks, that fixed it."
    assert out.cut_at == "quote"


def test_underscore_rule_above_outlook_header_goes_with_it():
    body = ("Fixed.\n\n________________________________\n"
            "From: Bob <bob@example.com>\nSent: Monday\nTo: x\nSubject: y\n\nold")
    assert visible(body) == "Fixed."


@pytest.mark.parametrize("sep", [
    "-----Original Message-----", "-----Ursprüngliche Nachricht-----", "-----Message d'origine-----",
    "-----Mensaje original-----", "-----Oorspronkelijk bericht-----", "-----Mensagem original-----",
    "-----Messaggio originale-----", "-----Oprindelig meddelelse-----",
])
def test_original_message_separator_is_cut(sep):
    assert visible(f"Yes please.\n\n{sep}\nold text\n") == "Yes please."


def test_header_lookalikes_in_content_are_not_cut():
    appointment = "Invitation:\n\nDate: Wednesday 3 October\nTime: 7:00\nAddress: 130 Fox St\n\nBring your ID."
    shift = "Please cover my shift.\nFrom: 10am\nTo: 2pm\nThanks"
    assert visible(appointment) == appointment
    assert visible(shift) == shift


def test_line_starting_with_on_is_not_a_quote_header():
    body = ("On your remote host you can run:\n\n   telnet 127.0.0.1 52698\n\nThis should work.\n\n"
            "On 9 Jan 2014, at 2:47, George wrote:\n\n> port forwarding stopped\n")
    assert visible(body) == "On your remote host you can run:\n\n   telnet 127.0.0.1 52698\n\nThis should work."


def test_reply_sharing_the_line_with_the_header():
    assert visible("Sounds good On Wed, Apr 4, 2012 at 3:59 PM, bob@example.com wrote:\n> Hi") == "Sounds good"


def test_interleaved_reply_keeps_everything_the_sender_wrote():
    body = ("On Tue, Apr 29, 2014 at 4:22 PM, Dev <dev@example.com> wrote:\n> question one?\n\n"
            "Answer one.\n\n> question two?\n\nAnswer two.\n\n> old line\n> old line\n> old line\n")
    out = cut_body(body)
    assert out.text.endswith("Answer two.")
    assert "Answer one." in out.text and "question one?" in out.text
    assert out.cut_at == "quote"


def test_bottom_posted_reply_below_a_quote_is_kept():
    body = "On 04/19/2011 07:10 AM, Roman wrote:\n\n> Is it fixed?\n\nYes, fixed this morning."
    out = cut_body(body)
    assert "Yes, fixed this morning." in out.text
    assert out.cut_at is None


def test_short_angle_bracket_lines_in_content_are_not_a_quote():
    body = "Run this:\n> dir C:\\temp"
    assert visible(body) == body
    body = "Visit us:\n>>> http://www.example.com <<<\nThanks"
    assert visible(body) == body


# --- forwards: the forwarded message is the request ---------------------------------------

def test_forwarded_message_with_note_is_kept_whole():
    body = ("FYI\n\n---------- Forwarded message ---------\nFrom: Customer <c@example.com>\n"
            "Date: Mon, Jan 8, 2024 at 9:00 AM\nSubject: Printer broken\nTo: boss@example.com\n\n"
            "The printer on floor 2 is broken.")
    out = cut_body(body)
    assert "The printer on floor 2 is broken." in out.text
    assert out.cut_at is None


@pytest.mark.parametrize("sep", [
    "Begin forwarded message:", "-------- Weitergeleitete Nachricht --------",
    "---------- Message transféré ---------", "---------- Mensaje reenviado ---------",
    "---------- Doorgestuurd bericht ---------", "---------- Mensagem encaminhada ---------",
])
def test_forwarded_only_mail_keeps_the_request(sep):
    body = f"{sep}\n\nFrom: Customer <c@example.com>\nSubject: VPN\nDate: Mon, 8 Jan 2024\n\nVPN is down since 9:00."
    out = cut_body(body)
    assert "VPN is down since 9:00." in out.text


def test_outlook_forward_without_note_is_not_emptied():
    body = "From: Customer <c@example.com>\nSent: Monday\nTo: Bob\nSubject: VPN\n\nVPN is down."
    out = cut_body(body)
    assert out.text == body and out.cut_at is None


def test_outlook_forward_with_see_below_keeps_the_request():
    body = "Please see below.\n\nFrom: Customer <c@example.com>\nSent: Monday\nTo: Bob\nSubject: VPN\n\nVPN is down."
    assert "VPN is down." in visible(body)


def test_body_that_is_only_a_quote_is_not_emptied():
    body = "On Mon, Jan 8, 2024 at 10:02 AM, Bob <bob@example.com> wrote:\n> Anything new?\n> Bob\n> ok"
    out = cut_body(body)
    assert out.text == body and out.cut_at is None


def test_forward_inside_quoted_history_is_cut_with_it():
    body = "Blah\n\n-----Original Message-----\n\nFYI\n\n---------- Forwarded message ----------\nFrom: a@b.c\n\nold"
    assert visible(body) == "Blah"


# --- signatures ---------------------------------------------------------------------------

def test_dash_dash_space_signature_is_cut():
    out = cut_body("Printer is fine now.\n\n-- \nRick Smith\nExample Ltd\n+1 555 0100")
    assert out.text == "Printer is fine now." and out.cut_at == "signature"


def test_dashes_inside_a_line_are_not_a_signature():
    body = "Use the switch -- not the router -- for this.\nThanks"
    assert visible(body) == body


def test_signature_then_quote_both_go():
    body = "Works.\n-- \nRick\n\nOn Mon, Jan 8, 2024 at 10:02 AM, Bob <bob@example.com> wrote:\n> old\n> old\n> old"
    assert visible(body) == "Works."


@pytest.mark.parametrize("footer", [
    "Sent from my iPhone", "Sent from my Verizon Wireless BlackBerry", "Get Outlook for Android",
    "Get Outlook for iOS<https://aka.ms/o0ukef>", "Von meinem iPhone gesendet", "Envoyé de mon iPhone",
    "Enviado desde mi iPhone", "Verzonden vanaf mijn iPhone", "Enviado do meu iPhone",
    "Inviato da iPhone", "Skickat från min iPhone", "Sendt fra min iPhone", "Sent from Yahoo Mail on Android",
    "iPhoneから送信",
])
def test_mobile_footer_is_cut(footer):
    out = cut_body(f"Here is another email\n\n{footer}")
    assert out.text == "Here is another email" and out.cut_at == "signature"


def test_sent_from_in_a_sentence_is_kept():
    body = "Here is another email\n\nSent from my desk, is much easier then my mobile phone."
    assert visible(body) == body


def test_dash_signoff_is_cut_but_a_last_bullet_is_kept():
    assert visible("Having the function would be great.\n\n-Abhishek Kona\n") == "Having the function would be great."
    bullets = "Please install:\n- Office\n- Teams"
    assert visible(bullets) == bullets


def test_undelimited_signoff_is_kept():
    body = "Please reset my password.\n\nThanks,\nJohn Smith\nExample Ltd"
    assert visible(body) == body


# --- waterlines and our marker ------------------------------------------------------------

def test_waterline_cuts_everything_below():
    body = "New info: it fails at boot.\n\n=== Please type your reply above ===\nTicket T-1 was updated"
    out = cut_body(body, waterlines=["=== Please type your reply above ==="])
    assert out.text == "New info: it fails at boot." and out.cut_at == "waterline"


def test_waterline_is_case_and_whitespace_insensitive_and_survives_rewrapping():
    body = "It fails at boot.\n\n> === please TYPE your\n>    reply   above ===\n> old"
    out = cut_body(body, waterlines=["=== Please type your reply above ==="])
    assert out.text == "It fails at boot." and out.cut_at == "waterline"


def test_earliest_of_several_waterlines_wins():
    body = "Reply.\n--- cut B ---\nmiddle\n--- cut A ---\nold"
    out = cut_body(body, waterlines=["--- cut A ---", "--- cut B ---"])
    assert out.text == "Reply."


def test_waterline_on_the_same_line_as_the_reply():
    out = cut_body(f"Thanks a lot! {MARKER} old", marker=MARKER)
    assert out.text == "Thanks a lot!" and out.cut_at == "marker"


def test_marker_takes_its_quote_header_along():
    body = (f"Ok, I'll try that.\n\nOn Mon, Jan 8, 2024 at 10:02 AM, Support <support@msp.example> wrote:\n"
            f"> {MARKER}\n> Hello, please restart.\n")
    out = cut_body(body, marker=MARKER)
    assert out.text == "Ok, I'll try that." and out.cut_at == "marker"


def test_our_reply_marker_constant_is_cut():
    refs = pytest.importorskip("portal.mail.refs")
    out = cut_body(f"Yes.\n\n{refs.REPLY_MARKER}\nT-1042 updated", marker=refs.REPLY_MARKER)
    assert out.text == "Yes." and out.cut_at == "marker"


def test_waterline_in_html_spread_over_tags():
    html = ("<div>It fails at boot.</div><div><b>=== Please type</b> your <i>reply</i>\n above ===</div>"
            "<div>Ticket T-1 updated</div>")
    out = cut_body("", html, waterlines=["=== please type your reply above ==="])
    assert out.text == "It fails at boot."
    assert "Ticket T-1" not in out.html and "Please type" not in out.html
    assert "It fails at boot." in out.html
    assert out.cut_at == "waterline"


def test_waterline_at_the_top_does_not_empty_the_body():
    body = f"{MARKER}\nI replied below the line, sorry: the VPN is down."
    out = cut_body(body, marker=MARKER)
    assert "the VPN is down" in out.text


def test_no_waterline_no_marker_leaves_plain_text_alone():
    body = "Hello,\n\nthe VPN is down since this morning.\n\nRegards\nAnna"
    out = cut_body(body)
    assert out == CutBody(body, None, None)


# --- HTML, and text/HTML consistency ------------------------------------------------------

GMAIL_HTML = ('<div dir="ltr">The printer works.<div><br></div><div>Thanks, Anna</div></div><br>'
              '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, Jan 8, 2024 at 10:02 AM '
              'Bob &lt;<a href="mailto:bob@example.com">bob@example.com</a>&gt; wrote:<br></div>'
              '<blockquote class="gmail_quote">Please restart it.</blockquote></div>')
GMAIL_TEXT = ("The printer works.\n\nThanks, Anna\n\nOn Mon, Jan 8, 2024 at 10:02 AM Bob <bob@example.com> wrote:\n\n"
              "> Please restart it.\n")


def test_gmail_text_and_html_are_cut_at_the_same_place():
    out = cut_body(GMAIL_TEXT, GMAIL_HTML)
    assert out.text == "The printer works.\n\nThanks, Anna"
    assert "Thanks, Anna" in out.html and "gmail_quote" not in out.html and "restart" not in out.html
    assert out.cut_at == "quote"


def test_html_only_gives_text_of_the_cut_html():
    out = cut_body("", GMAIL_HTML)
    assert out.text == "The printer works.\n\nThanks, Anna"
    assert "restart" not in out.html


@pytest.mark.parametrize("html", [
    '<p>Fixed.</p><div id="divRplyFwdMsg"><b>From:</b> Bob<br><b>Sent:</b> Monday<br></div><div>old</div>',
    '<p>Fixed.</p><div id="appendonsend"></div><hr><div id="x_divRplyFwdMsg">From: Bob</div><p>old</p>',
    ('<p class=MsoNormal>Fixed.</p><div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">'
     '<p class=MsoNormal><b>From:</b> Bob<br><b>Sent:</b> Monday<br><b>To:</b> Support<br><b>Subject:</b> x</p></div>'
     '<p class=MsoNormal>old</p>'),
    ('<div>Fixed.</div><div class="moz-cite-prefix">On 08.01.2024 10:02, Bob wrote:<br></div>'
     '<blockquote type="cite">old</blockquote>'),
    ('<div>Fixed.</div><div><br><blockquote type="cite"><div>On Jan 8, 2024, at 10:02, Bob &lt;b@x.com&gt; wrote:'
     '</div>old</blockquote></div>'),
    ('<div>Fixed.</div><div class="yahoo_quoted"><div>On Monday, January 8, 2024, Bob &lt;b@x.com&gt; wrote:</div>'
     '<div>old</div></div>'),
    '<div>Fixed.</div><div><hr id="zwchr"><b>From: </b>Bob<br><b>Sent: </b>Monday<br>old</div>',
    ('<div>Fixed.</div><span id="OLK_SRC_BODY_SECTION"><div>From: Bob &lt;b@x.com&gt;<br>Date: Mon<br></div>'
     '<div>old</div></span>'),
    ('<div>Fixed.<hr><b>From: </b>b@x.com<br><b>To: </b>s@x.com<br><b>Sent: </b>Monday<br><b>Subject: </b>x<br>'
     '<p>old</p></div>'),
])
def test_html_reply_containers_are_cut(html):
    out = cut_body("", html)
    assert out.text == "Fixed."
    assert "old" not in out.html and "Fixed." in out.html
    assert out.cut_at == "quote"


def test_html_signature_only_marked_in_html_is_cut_in_text_too():
    html = '<div>Printer fixed.</div><div id="Signature"><div>Anna Smith</div><div>Example Ltd</div></div>'
    text = "Printer fixed.\n\nAnna Smith\nExample Ltd"
    out = cut_body(text, html)
    assert out.text == "Printer fixed."
    assert "Anna Smith" not in out.html
    assert out.cut_at == "signature"


def test_quote_found_only_in_text_is_cut_in_html_too():
    text = "Done.\n\nFrom: Bob <bob@example.com>\nSent: Monday\nTo: Support\nSubject: x\n\nold request"
    html = ("<p>Done.</p><p>From: Bob &lt;bob@example.com&gt;<br>Sent: Monday<br>To: Support<br>Subject: x</p>"
            "<p>old request</p>")
    out = cut_body(text, html)
    assert out.text == "Done."
    assert "old request" not in out.html and "Done." in out.html


def test_html_forward_is_kept():
    html = ('<div dir="ltr">FYI<br><div class="gmail_quote">---------- Forwarded message ---------<br>'
            'From: Customer &lt;c@example.com&gt;<br>Subject: VPN<br><br><div>VPN is down.</div></div></div>')
    out = cut_body("", html)
    assert "VPN is down." in out.text and "VPN is down." in out.html
    assert out.cut_at is None


def test_uncut_html_is_returned_unchanged_and_no_html_stays_none():
    html = "<p>Hello <b>there</b></p>"
    assert cut_body("Hello there", html).html == html
    assert cut_body("Hello there").html is None


@pytest.mark.parametrize("html", ["", "   ", "<html></html>", "<?xml version='1.0' encoding='utf-8'?><p>Hi</p>"])
def test_odd_html_does_not_raise(html):
    out = cut_body("", html)
    assert isinstance(out.text, str)


def test_crlf_text_is_handled():
    body = "Works now.\r\n\r\nOn Mon, Jan 8, 2024 at 10:02 AM, Bob <bob@example.com> wrote:\r\n> a\r\n> b\r\n> c\r\n"
    assert visible(body) == "Works now."


def test_empty_body():
    assert cut_body("") == CutBody("", None, None)


# --- pathological input -------------------------------------------------------------------

def test_pathological_inputs_are_handled_linearly():
    long_line = "On " * 200_000 + "wrote"
    assert visible(long_line) == long_line.strip()
    many_headers = ("On Mon, Jan 8, 2024 Bob\n" * 20_000) + "text"
    assert visible(many_headers).endswith("text")
    deep_quote = "Reply\n" + ">" * 100_000 + " x\n" + "\n".join("> q" for _ in range(50_000))
    assert visible(deep_quote) == "Reply"
    wrote_soup = "x wrote: " * 100_000
    assert visible(wrote_soup) == wrote_soup.strip()


def test_pathological_html_is_handled():
    html = "<div>Top</div>" + "<div>" * 3000 + "deep" + "</div>" * 3000 + "<blockquote>q</blockquote>"
    out = cut_body("", html)
    assert out.text.startswith("Top")


# --- purity -------------------------------------------------------------------------------

def test_cut_imports_no_web_or_queue_framework():
    paths = sorted((Path(__file__).resolve().parents[2] / "portal" / "mail" / "cut").glob("*.py"))
    assert paths
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"flask", "sqlalchemy", "rq", "flask_sqlalchemy"}, path


# --- helpdesk safety ------------------------------------------------------------------------

def test_mail_flow_described_in_a_request_is_not_a_quote_header():
    body = "Please set up forwarding:\nFrom: info@example.com\nTo: bob@example.com\nThanks"
    assert visible(body) == body


def test_gmail_inline_answers_inside_the_quote_container_are_kept():
    html = ('<div dir=ltr>See inline.</div><div class=gmail_quote><div class=gmail_attr>On Mon, Jan 8, 2024 at '
            '10:02 AM Bob &lt;b@x.com&gt; wrote:<br></div><blockquote class=gmail_quote>Which printer?</blockquote>'
            '<div>The one on floor 2.</div><blockquote class=gmail_quote>Since when?<br>Bob<br>x</blockquote></div>')
    out = cut_body("", html)
    assert out.text.endswith("The one on floor 2.")
    assert "> Which printer?" in out.text  # quoted lines stay recognisable in the text
    assert "Since when?" not in out.html and "The one on floor 2." in out.html


def test_plain_quoting_inside_html_is_cut_like_text():
    html = "<div>Hello<br><br><div>&gt; Subject: Test<br>&gt; From: bob@x.org<br>&gt; Hi<br></div></div>"
    out = cut_body("Hello\n\n> Subject: Test\n> From: bob@x.org\n> Hi\n", html)
    assert out.text == "Hello"
    assert "Subject" not in out.html and "Hello" in out.html


def test_waterline_below_an_outlook_header_cuts_at_the_header():
    body = (f"Ok.\n\nFrom: Support <support@msp.example>\nSent: Monday\nTo: Anna\nSubject: [T-1042] VPN\n\n"
            f"{MARKER}\nHello Anna, please restart.")
    out = cut_body(body, marker=MARKER)
    assert out.text == "Ok." and out.cut_at == "marker"


def test_waterline_deep_in_old_history_leaves_the_reason_with_the_quote():
    history = "\n".join(f"old line {i}" for i in range(10))
    body = f"Ok.\n\n-----Original Message-----\n{history}\n{MARKER}\nolder"
    out = cut_body(body, marker=MARKER)
    assert out.text == "Ok." and out.cut_at == "quote"


# --- properties -----------------------------------------------------------------------------

_PIECES = st.sampled_from([
    "Hello", "Thanks,", "Bob", "> quoted", ">", "", "-- ", "--", "____", "Sent from my iPhone",
    "On Mon, Jan 8, 2024 at 10:02 AM, Bob <bob@example.com> wrote:", "From: Bob <b@x.com>",
    "Sent: Monday", "To: Anna", "Subject: x", "-----Original Message-----",
    "---------- Forwarded message ---------", MARKER, "2024-01-08 Bob <b@x.com>:", "Am 8.1.2024 schrieb Bob:",
    "   - item", "wrote:", "On", "x" * 300,
])


@fuzz(300)
@given(st.lists(_PIECES, max_size=25))
def test_cut_is_a_suffix_and_never_empties_a_body_with_content(pieces):
    body = "\n".join(pieces)
    out = cut_body(body, marker=MARKER)
    src = body.split("\n")
    while src and not src[0].strip():
        src.pop(0)
    got = out.text.split("\n") if out.text else []
    assert got[:-1] == src[:len(got) - 1]  # whole lines from the top …
    if got:
        assert src[len(got) - 1].startswith(got[-1].rstrip())  # … the last one maybe shortened
    if any(ch.isalnum() for ch in body.replace(">", "")):
        assert any(ch.isalnum() for ch in out.text)
    assert (out.cut_at is None) == (out.text == "\n".join(src).rstrip())  # a reason iff something went


_TAGS = st.sampled_from(["div", "p", "blockquote", "span", "b", "table", "tr", "td"])


@st.composite
def _html(draw, depth=0):
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        if depth < 4 and draw(st.booleans()):
            tag = draw(_TAGS)
            attrs = draw(st.sampled_from(["", ' class="gmail_quote"', ' id="divRplyFwdMsg"', ' type="cite"',
                                          ' class="gmail_signature"', ' style="border-top:solid 1px"']))
            parts.append(f"<{tag}{attrs}>{draw(_html(depth + 1))}</{tag}>")
        else:
            parts.append(draw(st.sampled_from([
                "Hello", "<br>", "<hr>", "On Mon, Jan 8, 2024, Bob &lt;b@x.com&gt; wrote:",
                "From: Bob &lt;b@x.com&gt;<br>Sent: Monday<br>", "&gt; q", "-- ", "x"])))
    return "".join(parts)


@fuzz(200)
@given(_html())
def test_html_cut_never_raises_and_keeps_text_and_html_together(html):
    out = cut_body("", html)
    assert isinstance(out.text, str) and isinstance(out.html, str)
    if out.cut_at is None:
        assert out.html == html


def test_marker_quoted_in_a_gmail_html_reply():
    html = (f'<div dir=ltr>Ok, restarted.</div><div class=gmail_quote><div class=gmail_attr>On Mon, Jan 8, 2024 at '
            f'10:02 AM Support &lt;support@msp.example&gt; wrote:<br></div><blockquote class=gmail_quote>'
            f'<div style="color:#999">{MARKER}</div><div>Hello Anna, please restart.</div></blockquote></div>')
    text = (f"Ok, restarted.\n\nOn Mon, Jan 8, 2024 at 10:02 AM Support <support@msp.example> wrote:\n\n"
            f"> {MARKER}\n> Hello Anna, please restart.\n")
    out = cut_body(text, html, marker=MARKER)
    assert out.text == "Ok, restarted." and out.cut_at == "marker"
    assert "Ok, restarted." in out.html and "gmail_attr" not in out.html and "please restart" not in out.html


def test_sentence_about_what_was_sent_is_not_an_attribution():
    body = "On 5 January I sent:\nthe invoice and the delivery note.\nPlease check."
    assert visible(body) == body


def test_plain_text_wrapped_in_pre_is_cut_line_by_line():
    html = ("<pre>Works now.\n\nOn Mon, Jan 8, 2024 at 10:02 AM, Bob &lt;b@x.com&gt; wrote:\n"
            "&gt; a\n&gt; b\n&gt; c\n</pre>")
    out = cut_body("", html)
    assert out.text == "Works now." and "wrote" not in out.html and "Works now." in out.html


def test_marker_in_the_middle_of_an_html_text_node():
    out = cut_body("", f"<div>Thanks! {MARKER} old</div><div>older</div>", marker=MARKER)
    assert out.text == "Thanks!"
    assert "Thanks!" in out.html and "old" not in out.html and "Please reply" not in out.html


def test_blank_waterlines_and_marker_are_ignored():
    body = "Hello\n\nsecond paragraph"
    assert cut_body(body, waterlines=["", "   "], marker="") == CutBody(body, None, None)


# --- the quick test before the verb search ---------------------------------------------------------

_VERB_CASES = st.sampled_from(sorted(__import__("portal.mail.cut.phrases", fromlist=["x"]).ATTRIBUTION_VERBS))
_ENDINGS = st.text(alphabet=" \t-_*:：\u00a0\u3000\x1c\x1fxI)", max_size=6)


@fuzz(1500)
@given(st.text(max_size=30), st.one_of(st.none(), _VERB_CASES), st.sampled_from([str.lower, str.upper, str.title]),
       _ENDINGS)
def test_the_quick_verb_check_agrees_with_the_search(before, verb, case, ending):
    from portal.mail.cut.quotes import _VERB_END_RE, _ends_with_verb

    line = before + (case(verb) if verb else "") + ending
    assert _ends_with_verb(line) == (_VERB_END_RE.search(line[-80:]) is not None)
