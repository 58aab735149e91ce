"""Every site of the demo world, registered here and nowhere else.

A site is a `demo.web.Site`: a path prefix, the source name its documents carry, request
handling, the documents it serves with what was planted in each, and its `[[targets]]`
table. Adding a source to the demo world is writing its module and listing its class below;
the order is the world's (its landing page, its documents and the demo config's targets).
"""

from __future__ import annotations

from demo.sites.chan import ChanSite
from demo.sites.civitai import CivitaiSite
from demo.sites.discourse import DiscourseSite
from demo.sites.feed import FeedSite
from demo.sites.filehost import FileHostSite
from demo.sites.github import GitHubSite
from demo.sites.hackernews import HackerNewsSite
from demo.sites.hub import HubSite
from demo.sites.ipfs import IpfsSite
from demo.sites.jackett import JackettSite
from demo.sites.lemmy import LemmySite
from demo.sites.modelscope import ModelScopeSite
from demo.sites.nyaa import NyaaSite
from demo.sites.paste import PasteSite
from demo.sites.phpbb import PhpbbSite
from demo.sites.prowlarr import ProwlarrSite
from demo.sites.reddit import RedditSite
from demo.sites.telegram import TelegramSite
from demo.sites.vbulletin import VBulletinSite
from demo.sites.xenforo import XenForoSite
from demo.web import Site

SITES: tuple[type[Site], ...] = (
    # The three core sources first: the demo's first targets.
    PhpbbSite, ChanSite, NyaaSite,
    DiscourseSite, FeedSite, GitHubSite, HackerNewsSite, HubSite, JackettSite, LemmySite, PasteSite,
    ProwlarrSite, RedditSite, VBulletinSite, XenForoSite,
    TelegramSite, FileHostSite, CivitaiSite, ModelScopeSite,
    IpfsSite,
)
