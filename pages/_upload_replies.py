"""Work around a Streamlit 1.67 bug that silently loses a chosen upload when a script run starts.

Choosing a file in ``st.file_uploader`` makes the browser ask the server for an upload URL
(``file_urls_request``) and wait, without a timeout, for the reply (``file_urls_response``) before it
shows the file and uploads it. The reply waits in the session's outgoing queue until the next flush;
a script run that starts in between (e.g. the rerun made by the previous upload) clears that queue,
keeping only lifecycle messages (``ForwardMsgQueue.clear(retain_lifecycle_msgs=True)``). The reply is
dropped, the uploader stays empty, no error is shown. Under load (10 sessions on 2 cores) this lost the
second file of a pair in 2-5 of 10 sessions (benchmarks/load_test.py, docs/RELIABILITY.md).

:func:`keep_upload_url_replies` makes such clears keep the replies; it is idempotent.
"""

from __future__ import annotations

import functools

from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

REPLY_TYPE = "file_urls_response"


def keep_upload_url_replies() -> None:
    """Patch ``ForwardMsgQueue.clear`` (process-wide, once) so that a lifecycle-retaining clear also keeps
    the pending upload-URL replies, in their order, after the kept lifecycle messages."""
    clear = ForwardMsgQueue.clear
    if getattr(clear, "_keeps_upload_replies", False):
        return

    @functools.wraps(clear)
    def clear_keeping_replies(self, retain_lifecycle_msgs: bool = False, **kwargs) -> None:
        replies = (
            [m for m in self._queue if m.WhichOneof("type") == REPLY_TYPE] if retain_lifecycle_msgs else []
        )
        clear(self, retain_lifecycle_msgs, **kwargs)
        self._queue.extend(replies)  # not deltas: the queue's delta index stays valid

    clear_keeping_replies._keeps_upload_replies = True  # type: ignore[attr-defined]
    ForwardMsgQueue.clear = clear_keeping_replies
