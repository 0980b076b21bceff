"""Multilingual phrase tables for `portal.mail.cut`.

Kept apart from the cutting logic so that adding a language is a data change. Every entry is
lower-case; matching is case-insensitive. Languages: English, German, French, Spanish, Dutch,
Portuguese, Italian, Swedish, Danish, Norwegian, Polish, Finnish, Czech, Russian, Vietnamese,
Japanese, Chinese (the last ones only where mail clients write fixed phrases).
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def alt(words: Sequence[str]) -> str:
    """A regular-expression alternation of the phrases, longest first."""
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))

# Words that open an attribution line: "On <date>, <who> wrote:", "Am <date> schrieb <who>:".
ATTRIBUTION_OPENERS = (
    "on", "am", "le", "el", "op", "em", "il", "il giorno", "den", "på", "w dniu", "dne",
    "vào", "в", "el día", "ar", "pe", "den dag", "tanggal", "在",
)

# Verbs (or verb phrases) that end an attribution, before the colon.
ATTRIBUTION_VERBS = (
    "wrote", "writes", "sent", "has written",
    "schrieb", "hat geschrieben", "geschrieben",
    "a écrit", "écrit",
    "escribió", "escribio", "ha escrito",
    "schreef", "het volgende geschreven", "geschreven",
    "escreveu", "escrito",
    "ha scritto", "scrisse",
    "skrev", "skrivit",
    "napisał", "napisała", "napisał(a)",
    "napsal", "napsala", "napsal(a)",
    "kirjoitti",
    "написал", "написала", "написал(а)",
    "đã viết",
    "írta",
    "yazdı",
    "のメッセージ", "は書きました",
    "写道",
)

# "-----Original Message-----" and friends: the start of Outlook-style quoted history.
ORIGINAL_MESSAGE = (
    "original message", "reply message", "original-nachricht", "original nachricht",
    "ursprüngliche nachricht", "antwort nachricht", "message d'origine", "message d’origine",
    "mensaje original", "oorspronkelijk bericht", "origineel bericht", "mensagem original",
    "messaggio originale", "ursprungligt meddelande", "oprindelig meddelelse",
    "opprinnelig melding", "wiadomość oryginalna", "oryginalna wiadomość",
    "alkuperäinen viesti", "původní zpráva", "исходное сообщение", "元のメッセージ",
)

# Forward separators. A forwarded message is the request itself: it is never cut away.
FORWARD_DASHED = (
    "forwarded message", "forwarded message follows", "weitergeleitete nachricht",
    "message transféré", "message transfere", "message réexpédié", "mensaje reenviado",
    "doorgestuurd bericht", "doorgestuurde bericht", "mensagem encaminhada",
    "mensagem reencaminhada", "messaggio inoltrato", "vidarebefordrat meddelande",
    "videresendt meddelelse", "videresendt melding", "wiadomość przekazana",
    "przekazana wiadomość", "välitetty viesti", "přeposlaná zpráva", "пересылаемое сообщение",
    "転送メッセージ", "转发的邮件",
)
FORWARD_LINES = (
    "begin forwarded message", "anfang der weitergeleiteten nachricht",
    "début du message réexpédié", "début du message transféré", "inicio del mensaje reenviado",
    "comienzo del mensaje reenviado", "begin doorgestuurd bericht", "doorgestuurd bericht",
    "início da mensagem reencaminhada", "início da mensagem encaminhada",
    "inizio messaggio inoltrato", "vidarebefordrat brev", "videresendt brev",
    "videresendt meddelelse", "początek przekazywanej wiadomości",
)

# Header keys of a quoted header block ("From: … Sent: … To: … Subject: …").
HEADER_FROM = (
    "from", "von", "de", "van", "da", "från", "fra", "od", "lähettäjä", "от", "від",
    "feladó", "kimden", "afzender", "avsändare", "afsender", "差出人", "发件人", "寄件者",
    "보낸 사람",
)
HEADER_DATE = (
    "date", "sent", "gesendet", "datum", "envoyé", "envoye", "enviado", "enviada", "fecha",
    "enviada em", "enviado em", "enviado el", "data de envio",
    "verzonden", "verstuurd", "data", "inviato", "skickat", "sendt", "wysłano", "wysłane",
    "lähetetty", "odesláno", "отправлено", "дата", "送信日時", "日付", "发送时间", "日期",
)
HEADER_OTHER = (
    "to", "subject", "cc", "bcc", "reply-to", "an", "betreff", "kopie", "à", "a", "objet",
    "para", "asunto", "aan", "onderwerp", "assunto", "oggetto", "till", "ämne", "til",
    "emne", "do", "temat", "kopia", "vastaanottaja", "aihe", "komu", "předmět", "кому",
    "тема", "копия", "宛先", "件名", "收件人", "主题", "抄送", "on behalf of",
)

# Openers of a mobile/webmail footer ("Sent from my iPhone").
MOBILE_PREFIXES = (
    "sent from", "sent via", "sent using", "sent with", "sent wirelessly", "sent on the go",
    "get outlook for", "get the outlook app",
    "von meinem", "gesendet von", "gesendet mit", "gesendet vom", "mit freundlichen grüßen von meinem",
    "envoyé de mon", "envoyé depuis", "envoyé à partir de", "envoyé avec", "envoyé sans fil",
    "enviado desde", "enviado con", "enviado do meu", "enviado de meu", "enviado do", "enviado a partir",
    "verzonden vanaf", "verstuurd vanaf", "verzonden met", "verstuurd met",
    "inviato da", "inviato dal",
    "skickat från", "sendt fra", "sendt från",
    "wysłane z", "wysłano z",
    "lähetetty", "odesláno z", "отправлено с", "отправлено из",
)
# Devices and apps that make a longer "Sent from …" line a footer rather than a sentence.
MOBILE_WORDS = (
    "iphone", "ipad", "ipod", "android", "blackberry", "mobile", "mobil", "móvil", "movil",
    "samsung", "galaxy", "htc", "nokia", "huawei", "xiaomi", "pixel", "smartphone", "phone",
    "handy", "tablet", "device", "outlook", "mail", "yahoo", "gmail", "windows", "verizon",
    "wireless", "lte", "4g", "5g", "mailbox", "acompli", "spark", "bluemail", "aquamail",
    "telefoon", "téléphone", "portable", "telefono", "teléfono", "telefone", "celular",
    "terminal", "sony", "xperia", "motorola", "oneplus", "lg", "zte", "oppo", "fairphone",
)
# Suffix forms ("iPhoneから送信", "… gesendet").
MOBILE_SUFFIXES = ("から送信", "gesendet", "verzonden", "envoyé")

# Short words that, above a header block, say "this is a forward, keep it" (the forwarded
# message is the request).
FORWARD_HINTS = (
    "fyi", "fwd", "fw:", "forward", "see below", "please see", "see the mail below",
    "see the email below", "below", "weitergeleitet", "weiterleitung", "siehe unten", "zur info",
    "zk", "ter info", "ter informatie", "zie hieronder", "zie onder", "transféré", "transfert",
    "pour info", "ci-dessous", "voir ci-dessous", "pour information", "reenvío", "reenviado",
    "ver abajo", "para su información", "ver abaixo", "segue abaixo", "encaminhado",
    "per conoscenza", "vedi sotto", "inoltro", "se nedan", "vidarebefordrar", "se nedenfor",
    "videresender", "poniżej", "przesyłam",
)
