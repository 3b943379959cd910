"""Reading and writing workbook files: calamine reading, XlsxWriter writing, annotation, encryption."""
