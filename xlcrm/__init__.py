"""xlcrm: customer management (顧客管理) for small firms, with Excel as the front end."""

from xlcrm.api import Master, import_lists, template_workbook, validate_workbooks
from xlcrm.errors import XlcrmError
from xlcrm.schema import SCHEMA_VERSION, Schema, load_schema
from xlcrm.version import __version__

__all__ = ["SCHEMA_VERSION", "Master", "Schema", "XlcrmError", "__version__", "import_lists", "load_schema",
           "template_workbook", "validate_workbooks"]
