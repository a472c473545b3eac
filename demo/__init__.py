"""``make demo``: a sample HIS day through carebridge, with a tiny CRM webhook receiver (issue #7 §5)."""
