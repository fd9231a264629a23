#include "pkg/metrics/progress.h"
