// The link-time check of the tier (tasklife/config.hpp): the one definition of the
// symbol every translation unit compiled against this tier's headers references.
#include <tasklife/config.hpp>
#include <tasklife/export.hpp>

extern "C" TASKLIFE_API const char TASKLIFE_TIER_LINK_SYMBOL = 0;
