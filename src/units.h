/* Unit conversion between the SenML/UCUM-style symbols devices report ("Cel", "hPa", "%RH", ...)
 * and the unit a sensor is registered with. Symbols are case-sensitive, as in UCUM. */
#ifndef IOTPIPE_UNITS_H
#define IOTPIPE_UNITS_H

#include <stdbool.h>

/* any thread, pure.
 * Convert v from unit `from` to unit `to` (SenML/UCUM-style symbols). Same unit or either empty: *out = v, true.
 * false when the units are not convertible (different dimensions or unknown). Pure. */
bool units_convert(double v, const char *from, const char *to, double *out);

/* any thread, pure: true when units_convert knows the symbol (e.g. to warn about a registry unit
 * no device reading could ever be converted to). */
bool units_known(const char *unit);

#endif
