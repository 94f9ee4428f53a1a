"""What follows the end of a job, in whichever process ended it (a worker, the sweep, the API on a
cancel): its webhook, if it has one, is called with the result body.

The body is built here, from the record, at once; the delivery itself (HTTP, retries) runs on the
dispatcher's own threads, never on a worker's inference thread, and never changes the job.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from retouch.config import Settings
from retouch.errors import BackendUnavailable
from retouch.jobs.backends import Backend
from retouch.jobs.records import JobRecord, Status

if TYPE_CHECKING:
    from retouch.jobs.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)


def output_url(base: str, request_id: str, index: int) -> str:
    return f"{base}/v2/requests/{request_id}/output/{index}"


class Endings:
    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self._dispatcher: WebhookDispatcher | None = None
        self._lock = threading.Lock()

    def _secret_of(self, owner_key: str | None) -> str | None:
        if owner_key is None:
            return self.settings.webhook_secret
        key = self.backend.store.key_by_id(owner_key)
        return key.webhook_secret if key is not None else None

    def _dispatch(self) -> WebhookDispatcher:
        # Started on the first webhook: most processes never call one.
        with self._lock:
            if self._dispatcher is None:
                from retouch.jobs.webhooks import WebhookDispatcher

                self._dispatcher = WebhookDispatcher(self.settings, self._secret_of)
            return self._dispatcher

    def result_body(self, record: JobRecord, base: str) -> dict[str, Any]:
        """What GET /v2/requests/{id} answers for the ended job."""
        metrics = record.public_metrics()
        if record.status is not Status.COMPLETED:
            default = "the request was cancelled" if record.status is Status.CANCELED else "the request failed"
            return {
                "request_id": record.id,
                "status": record.status.value,
                "error": record.error or default,
                "metrics": metrics,
            }
        if record.base64:
            outputs = []
            for entry in record.outputs:
                data = self.backend.blobs.get(record.id, entry.name)
                outputs.append(base64.b64encode(data).decode() if data is not None else None)
        else:
            outputs = [output_url(base, record.id, index) for index in range(len(record.outputs))]
        return {
            "request_id": record.id,
            "status": record.status.value,
            "output": outputs[0] if outputs else None,
            "outputs": outputs,
            "metrics": metrics,
        }

    def ended(self, job_id: str) -> None:
        """Called right after the write that ended `job_id`; never raises into the caller."""
        try:
            record = self.backend.store.get(job_id)
            if record is None or record.webhook is None or not record.status.is_terminal():
                return
            target = json.loads(record.webhook)
            body = self.result_body(record, target.get("base") or "")
        except BackendUnavailable as error:
            logger.warning(
                "request %s ended, but its webhook could not be prepared: %s",
                job_id,
                error.message,
            )
            return
        except Exception:
            logger.exception("request %s ended, but its webhook could not be prepared", job_id)
            return
        self._dispatch().deliver(target["url"], record.owner_key, record.id, body)

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            dispatcher.close(timeout)
