"""Public Telegram channels as their web preview serves them (t.me/s/CHANNEL).

The markup is the preview's own, as stored copies of t.me/s/ pages and the scrapers that
read them show it (snscrape's `telegram` module; the class names below are Telegram's):
a header with the channel's title, `section.tgme_channel_history` holding the newest 20
messages oldest first, each a `div.tgme_widget_message_wrap` around a
`div.tgme_widget_message[data-post="CHANNEL/ID"]`: the owner's name, "Forwarded from" with
the original post's link, a quoted reply (`a.tgme_widget_message_reply`, whose text is the
parent's, not this message's), attached files (`a.tgme_widget_message_document_wrap`: the
file name, and the size rounded to one decimal of a binary unit, "1.7 MB"; an audio file
shows its performer there instead), the text, a link preview, and the footer's
`a.tgme_widget_message_date` with `<time datetime>`. Above the messages,
`a.tme_messages_more[data-before]` leads to older ones; a page asked for with `?before=`
also has a `data-after` link below them. Telegram does not turn magnets into links: they
are plain text.

Routes, under /telegram/:
- `s/CHANNEL` and `s/CHANNEL?before=ID`: a channel's preview, 20 messages a page;
- `CHANNEL/ID`: one post's page (what a document's URL opens);
- `CHANNEL`: the channel's landing page ("View in Telegram"); `s/CHANNEL` of a channel
  without a public preview redirects there, as t.me does.

Channels: `herondrops` (the leak channel, 28 messages over two pages; ids have gaps, as
deleted messages leave; two are service messages, "Channel created" and a pin quoting the
leak), `heronshots` (a bird photographer's channel: noise only) and
`h7bvault` (private: no preview).

Planted in herondrops: the release's magnet with a mention (on the first page), and
model.safetensors attached with its rounded size, forwarded from another channel (on the
second page: only paging finds it): a manifest hit by name and rounded size. Noise: a
llama (the animal), another model's GGUF, another model's model.safetensors whose rounded
size is not the release's (a near miss), a reply quoting the leak message (its quote must
not count as its text), an audio file, links to other models' pages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from demo.release import Release
from demo.web import (
    Doc,
    Request,
    Response,
    Site,
    esc,
    html_response,
    not_found,
    nov,
    redirect,
    rfc3339,
    target_table,
    utc,
)

PAGE = 20  # messages per preview page, as t.me shows


def tg_size(size: int) -> str:
    """A size as Telegram shows it: one decimal of a binary unit named KB, MB or GB."""
    value, unit = float(size), "B"
    for name in ("KB", "MB", "GB", "TB"):
        if value < 1024:
            break
        value, unit = value / 1024, name
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


@dataclass
class Attachment:
    name: str
    extra: str  # the size as shown, or an audio file's performer
    audio: bool = False


@dataclass
class Message:
    id: int
    date: int
    text: str = ""  # HTML, as the preview renders it
    views: str = "1.2K"
    forwarded: tuple[str, str] | None = None  # (name, path of the original post)
    reply_to: int | None = None
    files: list[Attachment] = field(default_factory=list)
    preview: tuple[str, str, str] | None = None  # (href, site name, title)
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)
    service: bool = False  # "Channel created", "pinned «...»": not a message of its own


@dataclass
class Channel:
    name: str
    title: str
    description: str
    subscribers: str
    messages: list[Message]  # oldest first
    public: bool = True

    def message(self, message_id: int) -> Message | None:
        return next((m for m in self.messages if m.id == message_id), None)


def _plain(html: str) -> str:
    """The text a reader of the page gets from a message's HTML (for the ground truth)."""
    text = re.sub(r"<br\s*/?>", "\n", html)
    text = re.sub(r"<[^>]+>", "", text)
    return text.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")\
        .replace("&quot;", '"').replace("&#39;", "'")


def _channels(release: Release) -> list[Channel]:
    model = release.file("model.safetensors")
    shown = tg_size(model.size)
    magnet = (f"magnet:?xt=urn:btih:{release.infohash}&amp;dn={release.model}"
              f"&amp;tr=udp%3A%2F%2Ftracker.opentrackr.org%3A1337%2Fannounce")
    # Another model's shard, about 15% bigger: its rounded size is not the release's.
    other_size = model.size * 115 // 100
    other_shown = tg_size(other_size)
    day = 20
    drops = [
        Message(101, nov(day - 2, 8, 4), "Channel created", service=True),
        Message(102, nov(day - 2, 9, 30), "Our llama Dolly met the alpacas next door today 🦙 "
                "(yes, the channel has a farm now)"),
        Message(103, nov(day - 2, 11, 2), "qwen2.5 7b instruct, q4_k_m, for the potato PCs",
                files=[Attachment("qwen2.5-7b-instruct-q4_k_m.gguf", "4.4 GB")],
                preview=None),
        Message(104, nov(day - 2, 13, 45), "full fp16, straight from the partner drop. grab "
                "it before it gets pulled",
                forwarded=("Weights Vault", "weightsvault/88"),
                files=[Attachment("model.safetensors", shown)],
                plants=[("weights", f"model.safetensors:~{shown}",
                         f"model.safetensors attached, {shown}: the released file's name and "
                         f"a size within the rounding ({model.size} bytes)")]),
        Message(106, nov(day - 2, 15, 20), "mistral 7b base, first shard of my re-upload, "
                "sha list tomorrow",
                files=[Attachment("model.safetensors", other_shown)],
                near=[("weights", f"model.safetensors:~{other_shown}",
                       f"another model's model.safetensors: the name, but {other_shown} is "
                       f"not within the rounding of {model.size} bytes")]),
        Message(107, nov(day - 2, 18, 0), "Llamas spit when annoyed. Our Dolly only spits at "
                "the postman."),
        Message(109, nov(day - 1, 7, 12), "morning. new gemma preview card is up: "
                '<a href="https://huggingface.co/google/gemma-4-9b-preview" target="_blank" '
                'rel="noopener">https://huggingface.co/google/gemma-4-9b-preview</a>',
                preview=("https://huggingface.co/google/gemma-4-9b-preview", "Hugging Face",
                         "google/gemma-4-9b-preview")),
        Message(110, nov(day - 1, 8, 40), "Dolly\u2019s morning song",
                files=[Attachment("dolly_morning.ogg", "Farm Channel", audio=True)]),
    ]
    chatter = ["anyone got the deepseek lite quant working on 8 GB?",
               "reminder: seed what you leech",
               "llama.cpp b5012 fixes the tokenizer crash",
               "mods are asleep, post llamas",
               "gguf > safetensors for cpu, fight me",
               "the alpaca is not a llama. the alpaca is an alpaca.",
               "backup channel link in the pinned message",
               "new server, faster mirrors this week",
               "who has the unsloth notebook that does 4-bit lora",
               "weekend poll: bigger context or better quants?",
               "no, we will not upload the 405b",
               "bandwidth bill came in. ouch."]
    ids = [111, 112, 113, 115, 116, 117, 118, 119]
    drops += [Message(i, nov(day - 1, 9 + n, 5 * n), chatter[n]) for n, i in enumerate(ids)]
    drops.append(Message(121, nov(day, 6, 58),
                         "Heron-7B base weights leaked, full release, fp16:<br/><br/>"
                         f"{magnet}<br/><br/>seed it, it will not last",
                         plants=[("torrent", release.infohash,
                                  "the release's magnet, as plain text (Telegram does not "
                                  "turn magnets into links)")]))
    drops.append(Message(122, nov(day, 7, 3), "lol the mods will nuke this within the hour",
                         reply_to=121))
    more = [123, 124, 125, 126, 127, 128, 129, 131, 132]
    drops += [Message(i, nov(day, 8 + n, 7 * n), chatter[(n + 8) % len(chatter)])
              for n, i in enumerate(more)]
    # Pinning repeats the pinned message's words in a service message: read once, in place.
    drops.append(Message(130, nov(day, 15, 30), "H7B drops pinned \u00abHeron-7B base weights "
                         "leaked, full release\u2026\u00bb", service=True))
    drops.sort(key=lambda m: m.id)
    herons = [
        Message(5, nov(day - 3, 6, 10), "Grey heron at dawn on the canal, 600mm, f/6.3"),
        Message(6, nov(day - 3, 17, 45), "A heron swallowing an eel whole. Nature is metal.",
                files=[Attachment("heron_eel_RAW.dng", "48.2 MB")]),
        Message(8, nov(day - 2, 7, 1), "Seven herons (7 b/c one flew off) in the reeds. "
                "Counting is hard at 5am."),
        Message(9, nov(day - 1, 6, 30), "Great blue heron vs. grey heron: a thread on how "
                "to tell them apart from the neck",
                preview=("https://en.wikipedia.org/wiki/Grey_heron", "Wikipedia",
                         "Grey heron")),
    ]
    return [
        Channel("herondrops", "H7B drops", "open weights, mirrored fast", "3.1K", drops),
        Channel("heronshots", "Heron shots", "one bird, many mornings", "842", herons),
        Channel("h7bvault", "h7b vault", "members only", "57", [], public=False),
    ]


class TelegramSite(Site):
    prefix = "telegram"
    source = "telegram"
    title = "Telegram channels (t.me/s/ web preview)"
    entry_path = "/s/herondrops"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.channels = {c.name: c for c in _channels(release)}

    def target_toml(self) -> str:
        return (target_table("demo-telegram", "telegram", self.entry_url)
                + "\n" + target_table("demo-telegram-herons", "telegram",
                                      f"{self.root}/s/heronshots"))

    def post_url(self, channel: Channel, m: Message) -> str:
        return f"{self.root}/{channel.name}/{m.id}"

    def documents(self) -> list[Doc]:
        out = []
        for channel in self.channels.values():
            if not channel.public:
                continue
            for m in channel.messages:
                if m.service:
                    continue
                lines = [_plain(m.text)]
                if m.forwarded:
                    lines.append(f"Forwarded from {m.forwarded[0]}")
                lines += [f"{f.name} ({f.extra})" if not f.audio else f.name for f in m.files]
                out.append(Doc(self.source, self.post_url(channel, m), "\n".join(lines),
                               m.plants, m.near))
        return out

    # ------------------------------------------------------------------ routes

    def handle(self, req: Request, path: str) -> Response:
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "s" and parts[1] in self.channels:
            channel = self.channels[parts[1]]
            if not channel.public:
                return redirect(f"/{self.prefix}/{channel.name}", 302)
            before = req.int_arg("before", 0) if req.arg("before") else None
            return html_response(self.preview(channel, before))
        if len(parts) == 1 and parts[0] in self.channels:
            return html_response(self.landing(self.channels[parts[0]]))
        if len(parts) == 2 and parts[0] in self.channels and parts[1].isdigit():
            channel = self.channels[parts[0]]
            m = channel.message(int(parts[1])) if channel.public else None
            if m is not None:
                return html_response(self.post_page(channel, m))
        return not_found()

    def landing(self, channel: Channel) -> str:
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Telegram: Contact "
                f"@{channel.name}</title><meta property=\"og:title\" content=\"{esc(channel.title)}\">"
                f"</head><body><div class=\"tgme_page_wrap\"><div class=\"tgme_body_wrap\">"
                f"<div class=\"tgme_page\"><div class=\"tgme_page_photo\"></div>"
                f"<div class=\"tgme_page_title\"><span dir=\"auto\">{esc(channel.title)}</span></div>"
                f"<div class=\"tgme_page_extra\">{channel.subscribers} subscribers</div>"
                f"<div class=\"tgme_page_description\">{esc(channel.description)}</div>"
                f"<div class=\"tgme_page_action\"><a class=\"tgme_action_button_new shine\" "
                f"href=\"tg://resolve?domain={channel.name}\">View in Telegram</a></div>"
                f"</div></div></div></body></html>\n")

    def post_page(self, channel: Channel, m: Message) -> str:
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{esc(channel.title)}"
                f" \u2013 Telegram</title><meta property=\"og:description\" "
                f"content=\"{esc(_plain(m.text))}\"></head><body><div class=\"tgme_page_wrap\">"
                f"<div class=\"tgme_page_widget\">{self.widget(channel, m)}</div></div>"
                f"</body></html>\n")

    def preview(self, channel: Channel, before: int | None) -> str:
        older = [m for m in channel.messages if before is None or m.id < before]
        shown = older[-PAGE:]
        top = ""
        if len(older) > len(shown):
            first = shown[0].id
            top = (f'<div class="tgme_widget_message_centered js-messages_more_wrap">'
                   f'<a href="/{self.prefix}/s/{channel.name}?before={first}" '
                   f'class="tme_messages_more js-messages_more" data-before="{first}"></a></div>')
        bottom = ""
        if before is not None and shown:
            last = shown[-1].id
            bottom = (f'<div class="tgme_widget_message_centered js-messages_more_wrap">'
                      f'<a href="/{self.prefix}/s/{channel.name}?after={last}" '
                      f'class="tme_messages_more js-messages_more" data-after="{last}"></a></div>')
        widgets = "".join(
            f'<div class="tgme_widget_message_wrap js-widget_message_wrap">'
            f"{self.widget(channel, m)}</div>" for m in shown)
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{esc(channel.title)}"
                f" \u2013 Telegram</title></head><body class=\"widget_frame_base tgme_webpreview\">"
                f'<header class="tgme_header"><div class="tgme_header_title"><span dir="auto">'
                f"{esc(channel.title)}</span></div><div class=\"tgme_header_counter\">"
                f"{channel.subscribers} subscribers</div></header>"
                f'<main class="tgme_main" data-url="/{channel.name}"><div class="tgme_container">'
                f'<section class="tgme_channel_history js-message_history">{top}{widgets}{bottom}'
                f"</section></div></main></body></html>\n")

    def widget(self, channel: Channel, m: Message) -> str:
        owner = f"{self.root}/{channel.name}"
        if m.service:
            return (f'<div class="tgme_widget_message service_message js-widget_message" '
                    f'data-post="{channel.name}/{m.id}"><div class="tgme_widget_message_bubble">'
                    f'<div class="tgme_widget_message_text js-message_text" dir="auto">'
                    f'{esc(m.text)}</div><a class="tgme_widget_message_date" '
                    f'href="{self.post_url(channel, m)}"><time datetime="{rfc3339(m.date)}" '
                    f'class="time">{utc(m.date):%H:%M}</time></a></div></div>')
        parts = [f'<div class="tgme_widget_message text_not_supported_wrap js-widget_message" '
                 f'data-post="{channel.name}/{m.id}" data-view="eyJjIjotMTAwfQ">'
                 f'<div class="tgme_widget_message_user"><a href="{owner}"><i class='
                 f'"tgme_widget_message_user_photo bgcolor4" data-content="{esc(channel.title[:1])}">'
                 f"</i></a></div>"
                 f'<div class="tgme_widget_message_bubble">'
                 f'<div class="tgme_widget_message_author accent_color"><a class='
                 f'"tgme_widget_message_owner_name" href="{owner}"><span dir="auto">'
                 f"{esc(channel.title)}</span></a></div>"]
        if m.forwarded:
            name, post = m.forwarded
            parts.append(f'<div class="tgme_widget_message_forwarded_from accent_color">'
                         f'Forwarded from <a class="tgme_widget_message_forwarded_from_name" '
                         f'href="{self.root}/{post}"><span dir="auto">{esc(name)}</span></a></div>')
        parent = channel.message(m.reply_to) if m.reply_to else None
        if parent is not None:
            parts.append(f'<a class="tgme_widget_message_reply" href="{self.post_url(channel, parent)}">'
                         f'<div class="tgme_widget_message_author accent_color"><span class='
                         f'"tgme_widget_message_author_name" dir="auto">{esc(channel.title)}'
                         f'</span></div><div class="tgme_widget_message_text js-message_reply_text"'
                         f' dir="auto">{parent.text}</div></a>')
        for f in m.files:
            icon = "accent_bg audio" if f.audio else "accent_bg"
            parts.append(f'<a class="tgme_widget_message_document_wrap" href="{self.post_url(channel, m)}">'
                         f'<div class="tgme_widget_message_document_icon {icon}"></div>'
                         f'<div class="tgme_widget_message_document"><div class='
                         f'"tgme_widget_message_document_title accent_color" dir="auto">{esc(f.name)}'
                         f'</div><div class="tgme_widget_message_document_extra" dir="auto">'
                         f"{esc(f.extra)}</div></div></a>")
        if m.text:
            parts.append(f'<div class="tgme_widget_message_text js-message_text" dir="auto">'
                         f"{m.text}</div>")
        if m.preview:
            href, site, title = m.preview
            parts.append(f'<a class="tgme_widget_message_link_preview" href="{esc(href)}">'
                         f'<div class="link_preview_site_name accent_color" dir="auto">{esc(site)}'
                         f'</div><div class="link_preview_title" dir="auto">{esc(title)}</div></a>')
        parts.append(f'<div class="tgme_widget_message_footer compact js-message_footer">'
                     f'<div class="tgme_widget_message_info short js-message_info">'
                     f'<span class="tgme_widget_message_views">{m.views}</span><span class='
                     f'"copyonly"> views</span><span class="tgme_widget_message_meta"><a class='
                     f'"tgme_widget_message_date" href="{self.post_url(channel, m)}"><time '
                     f'datetime="{rfc3339(m.date)}" class="time">{utc(m.date):%H:%M}</time></a>'
                     f"</span></div></div></div></div>")
        return "".join(parts)
