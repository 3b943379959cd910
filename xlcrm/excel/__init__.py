"""The Excel ribbon add-in (顧客管理 tab): adapter, actions, ribbon entry point, build and install.

Nothing here imports xlwings except :mod:`xlcrm.excel.xlwings_adapter`, which only Excel runs; the
actions are tested on Linux through :mod:`xlcrm.excel.openpyxl_adapter`.  See docs/addin.md.
"""
