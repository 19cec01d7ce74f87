-- wrk script for the 1 MiB POST scenario: every request carries the same 1 MiB body.
-- The body is built once; wrk sends it with a Content-Length.
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
