"""Asking a (new) index the judged queries again: the `top_k` that `scores.rescore` needs."""

from __future__ import annotations

import logging

from judgments.scores import rescore
from judgments.store import JudgmentStore, JudgmentsUnavailable
from search import SearchService
from vectorizer.images import ImageError, open_image

log = logging.getLogger(__name__)


def service_top_k(service: SearchService, judgments: JudgmentStore):
    """A `TopK` over `service`: products by their stored vector, images by the kept copy."""
    def top_k(query: dict, k: int) -> list[str] | None:
        filters, colour = query["filters"] or None, query["colour"] or None
        try:
            if query["query_kind"] == "item" and not query["crop"]:
                response = service.search_item(query["query_ref"], k, filters, colour)
            else:
                content = judgments.query_image(f"{query['query_hash']}|{query['crop']}")
                if content is None:
                    return None
                image = open_image(content, service.config.download.max_pixels)
                response = service.search_image(image, k, filters, colour)
        except (KeyError, ImageError):
            return None
        return [str(i) for i in response.results["id"]]
    return top_k


def rescore_judgments(service: SearchService, k: int) -> dict | None:
    """The re-score of the config's judgments against `service`'s index; None when there are no
    judgments or the database cannot be read (logged)."""
    judgments = JudgmentStore(service.config.paths.judgments_path,
                              service.config.judgments.busy_timeout_s)
    try:
        table = judgments.table()
        if table.empty:
            return None
        return rescore(table, service_top_k(service, judgments), k)
    except JudgmentsUnavailable as error:
        log.warning("judgments not re-scored: %s", error)
        return None
