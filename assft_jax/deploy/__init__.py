"""From an adapted model to files people open: `predict` (segment new scans in their own
grid), `status` (where a run stands, who waits for annotators) and `viewer` (the label,
uncertainty and probability files and the color table both of them write).

`viewer` sits with the rooms (it needs only data and engine) and the oracle uses it;
`predict` and `status` sit beside the loop (they read a run's workdir through the
session's builders). This file imports none of them, so the oracle can import `viewer`
while `predict` imports the session, which imports the oracle.
"""
