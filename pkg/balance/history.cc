#include "pkg/balance/history.h"
