/* Unit conversion: each symbol maps linearly onto its dimension's SI unit, si = v*scale + offset,
 * so one table row per symbol covers every pair within a dimension. */
#include <string.h>

#include "units.h"

enum units_dim {
	DIM_TEMPERATURE,    /* K */
	DIM_PRESSURE,       /* Pa */
	DIM_RATIO,          /* 1 */
	DIM_LENGTH,         /* m */
	DIM_POWER,          /* W */
	DIM_ENERGY,         /* J */
	DIM_VOLTAGE,        /* V */
	DIM_CURRENT,        /* A */
	DIM_TIME,           /* s */
};

struct unit_def {
	const char *symbol;
	enum units_dim dim;
	double scale;
	double offset;
};

/* 5/9 K per degree Fahrenheit, and 32 degF = 273.15 K */
#define F_SCALE (5.0/9.0)
#define F_OFFSET (273.15 - 32.0*(5.0/9.0))

static const struct unit_def unit_table[] = {
	{"K", DIM_TEMPERATURE, 1.0, 0.0},
	{"Cel", DIM_TEMPERATURE, 1.0, 273.15},
	{"degC", DIM_TEMPERATURE, 1.0, 273.15},
	{"\xC2\xB0" "C", DIM_TEMPERATURE, 1.0, 273.15},        /* not UCUM, but what devices send */
	{"degF", DIM_TEMPERATURE, F_SCALE, F_OFFSET},
	{"[degF]", DIM_TEMPERATURE, F_SCALE, F_OFFSET},         /* UCUM's own spelling */
	{"\xC2\xB0" "F", DIM_TEMPERATURE, F_SCALE, F_OFFSET},

	{"Pa", DIM_PRESSURE, 1.0, 0.0},
	{"hPa", DIM_PRESSURE, 1e2, 0.0},
	{"kPa", DIM_PRESSURE, 1e3, 0.0},
	{"MPa", DIM_PRESSURE, 1e6, 0.0},
	{"bar", DIM_PRESSURE, 1e5, 0.0},
	{"mbar", DIM_PRESSURE, 1e2, 0.0},
	{"psi", DIM_PRESSURE, 6894.757293168361, 0.0},          /* lbf/in^2 */
	{"atm", DIM_PRESSURE, 101325.0, 0.0},

	/* "%" and "%RH" are the same number; "/" is SenML's plain ratio (0.41 == 41 %RH) */
	{"/", DIM_RATIO, 1.0, 0.0},
	{"%", DIM_RATIO, 1e-2, 0.0},
	{"%RH", DIM_RATIO, 1e-2, 0.0},

	{"m", DIM_LENGTH, 1.0, 0.0},
	{"cm", DIM_LENGTH, 1e-2, 0.0},
	{"mm", DIM_LENGTH, 1e-3, 0.0},
	{"km", DIM_LENGTH, 1e3, 0.0},

	{"W", DIM_POWER, 1.0, 0.0},
	{"mW", DIM_POWER, 1e-3, 0.0},
	{"kW", DIM_POWER, 1e3, 0.0},

	{"J", DIM_ENERGY, 1.0, 0.0},
	{"kJ", DIM_ENERGY, 1e3, 0.0},
	{"Wh", DIM_ENERGY, 3600.0, 0.0},
	{"kWh", DIM_ENERGY, 3.6e6, 0.0},

	{"V", DIM_VOLTAGE, 1.0, 0.0},
	{"mV", DIM_VOLTAGE, 1e-3, 0.0},

	{"A", DIM_CURRENT, 1.0, 0.0},
	{"mA", DIM_CURRENT, 1e-3, 0.0},

	{"s", DIM_TIME, 1.0, 0.0},
	{"ms", DIM_TIME, 1e-3, 0.0},
	{"min", DIM_TIME, 60.0, 0.0},
	{"h", DIM_TIME, 3600.0, 0.0},
	{"d", DIM_TIME, 86400.0, 0.0},
};

static const struct unit_def *unit_find(const char *symbol)
{
	for(size_t i = 0; i < sizeof(unit_table)/sizeof(unit_table[0]); i++){
		if(!strcmp(unit_table[i].symbol, symbol)) return &unit_table[i];
	}
	return NULL;
}

bool units_known(const char *unit)
{
	return unit != NULL && unit_find(unit) != NULL;
}

bool units_convert(double v, const char *from, const char *to, double *out)
{
	const struct unit_def *f, *t;

	if(from == NULL || to == NULL || from[0] == '\0' || to[0] == '\0' || !strcmp(from, to)){
		*out = v;
		return true;
	}
	f = unit_find(from);
	t = unit_find(to);
	if(f == NULL || t == NULL || f->dim != t->dim) return false;
	/* Factored so that aliases (Cel/degC, %/%RH) give v back bit for bit: the offsets cancel to
	 * exactly 0 and the scale ratio to exactly 1, rather than v + 273.15 - 273.15. */
	*out = v*(f->scale/t->scale) + (f->offset - t->offset)/t->scale;
	return true;
}
