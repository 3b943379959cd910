"""xlcrm: customer management (顧客管理) for small firms, with Excel as the front end."""

from xlcrm.api import Master, template_workbook, validate_workbooks
from xlcrm.errors import XlcrmError
from xlcrm.schema import SCHEMA_VERSION, Schema, load_schema

__version__ = "0.1.0"
__all__ = ["SCHEMA_VERSION", "Master", "Schema", "XlcrmError", "__version__", "load_schema",
           "template_workbook", "validate_workbooks"]
