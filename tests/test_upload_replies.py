"""The upload-URL reply survives the queue clear made when a script run starts (pages/_upload_replies.py)."""

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

from pages import _upload_replies as upload_replies


def _reply(request_id: str) -> ForwardMsg:
    msg = ForwardMsg()
    msg.file_urls_response.response_id = request_id
    return msg


def test_a_run_start_keeps_the_pending_upload_url_reply_and_a_flush_still_empties_the_queue():
    upload_replies.keep_upload_url_replies()
    upload_replies.keep_upload_url_replies()  # idempotent
    queue = ForwardMsgQueue()
    queue.enqueue(_reply("r1"))
    queue.clear(
        retain_lifecycle_msgs=True, fragment_ids_this_run=None
    )  # what AppSession does on SCRIPT_STARTED
    assert [m.file_urls_response.response_id for m in queue.flush()] == ["r1"]
    assert queue.is_empty()
    queue.enqueue(_reply("r2"))
    queue.clear()
    assert queue.is_empty(), "a plain clear (flush, shutdown) still drops everything"
