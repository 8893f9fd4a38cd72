// A page shown at a callback URL (an error) drops the one-shot secret from the address bar and history.
"use strict";
if (/[?&](session|token|code|state)=/.test(location.search)) {
  history.replaceState(null, "", location.pathname);
}
