#!/usr/bin/env bash
# Installs Debian's Chromium and its WebDriver for the browser test of `immunodiff review`
# (Testing/test_review_browser.py), when they are missing and this user may install packages.
# Never fails: without them that test is skipped and says why.
if command -v chromedriver >/dev/null 2>&1 && [ -x /usr/lib/chromium/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing chromium and chromium-driver for the browser test..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends chromium chromium-driver) >/dev/null 2>&1 \
    || echo "Could not install chromium; the browser test will be skipped." >&2
else
  echo "chromium/chromedriver missing and not root: the browser test will be skipped." >&2
fi
exit 0
