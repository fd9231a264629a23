#include "pkg/config/rinetd.h"
