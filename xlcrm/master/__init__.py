"""One master from many workbooks: matching, the merge, decisions, the master workbook, distribute, handover."""
