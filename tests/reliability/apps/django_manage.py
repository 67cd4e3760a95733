"""manage.py of the Django app of the reliability tests."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.reliability.apps.django_settings"
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
