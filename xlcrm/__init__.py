"""xlcrm: customer management (顧客管理) for small firms, with Excel as the front end."""

from xlcrm.errors import XlcrmError
from xlcrm.schema import SCHEMA_VERSION, Schema, load_schema

__version__ = "0.1.0"
__all__ = ["SCHEMA_VERSION", "Schema", "XlcrmError", "__version__", "load_schema"]
