/* Unit tests of unit conversion. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "units.h"

/* Converts and checks the result within a relative tolerance (absolute near zero). */
static void expect_conv(double v, const char *from, const char *to, double want)
{
	double out = NAN;
	double tol = 1e-9*fmax(1.0, fabs(want));

	if(!units_convert(v, from, to, &out)) fail_msg("%g %s -> %s: not convertible", v, from, to);
	if(!(fabs(out - want) <= tol)) fail_msg("%g %s -> %s: got %.17g want %.17g", v, from, to, out, want);
}

/* Both ways: from -> to gives want, and want to -> from gives v back. */
static void expect_both(double v, const char *from, const char *to, double want)
{
	expect_conv(v, from, to, want);
	expect_conv(want, to, from, v);
}

static void expect_refused(const char *from, const char *to)
{
	double out = 12345.0;

	if(units_convert(1.0, from, to, &out)) fail_msg("%s -> %s: converted to %g", from, to, out);
}

static void test_identity(void **state)
{
	double out;

	/* same unit, known or not, and either side empty: the value as it is, bit for bit */
	assert_true(units_convert(22.5, "Cel", "Cel", &out));
	assert_true(out == 22.5);
	assert_true(units_convert(22.5, "furlong", "furlong", &out));
	assert_true(out == 22.5);
	assert_true(units_convert(22.5, "", "K", &out));
	assert_true(out == 22.5);
	assert_true(units_convert(22.5, "Cel", "", &out));
	assert_true(out == 22.5);
	assert_true(units_convert(22.5, "", "", &out));
	assert_true(out == 22.5);
	assert_true(units_convert(-0.0, "bogus", "", &out));
	assert_true(out == 0.0 && signbit(out));
	/* aliases give the value back exactly, without an offset round trip */
	assert_true(units_convert(22.5, "Cel", "degC", &out));
	assert_true(out == 22.5);
	assert_true(units_convert(0.1, "degC", "Cel", &out));
	assert_true(out == 0.1);
	assert_true(units_convert(41.3, "%", "%RH", &out));
	assert_true(out == 41.3);
	assert_true(units_convert(41.3, "%RH", "%", &out));
	assert_true(out == 41.3);
	assert_true(units_convert(98.6, "degF", "[degF]", &out));
	assert_true(out == 98.6);
}

static void test_temperature(void **state)
{
	expect_both(0.0, "Cel", "K", 273.15);
	expect_both(22.5, "Cel", "K", 295.65);
	expect_both(-273.15, "Cel", "K", 0.0);
	expect_both(100.0, "Cel", "degF", 212.0);
	expect_both(0.0, "Cel", "degF", 32.0);
	expect_both(-40.0, "Cel", "degF", -40.0);
	expect_both(37.0, "degC", "degF", 98.6);
	expect_both(32.0, "degF", "K", 273.15);
	expect_both(0.0, "K", "degF", -459.67);
	expect_both(20.0, "\xC2\xB0" "C", "\xC2\xB0" "F", 68.0);
	expect_both(300.0, "K", "degC", 26.85);
}

static void test_pressure(void **state)
{
	expect_both(1013.25, "hPa", "Pa", 101325.0);
	expect_both(1013.25, "hPa", "kPa", 101.325);
	expect_both(1013.25, "hPa", "mbar", 1013.25);
	expect_both(1.01325, "bar", "hPa", 1013.25);
	expect_both(1.0, "bar", "kPa", 100.0);
	expect_both(1.0, "psi", "Pa", 6894.757293168361);
	expect_both(14.6959487755, "psi", "kPa", 101.325);
	expect_both(1.0, "atm", "hPa", 1013.25);
	expect_both(2.5, "MPa", "bar", 25.0);
}

static void test_ratio(void **state)
{
	expect_both(41.0, "%RH", "%", 41.0);
	expect_both(0.41, "/", "%RH", 41.0);
	expect_both(0.5, "/", "%", 50.0);
}

static void test_length_power_energy(void **state)
{
	expect_both(1.0, "km", "m", 1000.0);
	expect_both(1.0, "m", "cm", 100.0);
	expect_both(25.4, "mm", "cm", 2.54);
	expect_both(1.5, "km", "mm", 1.5e6);

	expect_both(2.5, "kW", "W", 2500.0);
	expect_both(250.0, "mW", "W", 0.25);

	expect_both(1.0, "Wh", "J", 3600.0);
	expect_both(1.0, "kWh", "J", 3.6e6);
	expect_both(1.0, "kWh", "Wh", 1000.0);
	expect_both(3.6, "kJ", "Wh", 1.0);
}

static void test_electric_time(void **state)
{
	expect_both(3300.0, "mV", "V", 3.3);
	expect_both(0.02, "A", "mA", 20.0);

	expect_both(1.0, "h", "s", 3600.0);
	expect_both(1.0, "h", "min", 60.0);
	expect_both(1500.0, "ms", "s", 1.5);
	expect_both(1.0, "d", "h", 24.0);
	expect_both(90.0, "min", "h", 1.5);
}

static void test_incompatible(void **state)
{
	expect_refused("Cel", "Pa");
	expect_refused("K", "%RH");
	expect_refused("%", "m");
	expect_refused("W", "Wh");
	expect_refused("J", "W");
	expect_refused("V", "A");
	expect_refused("mA", "mV");
	expect_refused("s", "m");
	expect_refused("min", "m");
	expect_refused("h", "hPa");
	expect_refused("ms", "mm");
}

static void test_unknown(void **state)
{
	expect_refused("furlong", "m");
	expect_refused("m", "furlong");
	expect_refused("furlong", "fortnight");
	/* symbols are case-sensitive, as in UCUM */
	expect_refused("cel", "K");
	expect_refused("PA", "hPa");
	expect_refused("KWh", "Wh");
	expect_refused("Cel ", "K");
	expect_refused("C", "K");
	/* a refused conversion leaves *out alone */
	double out = 7.0;
	assert_false(units_convert(1.0, "Cel", "Pa", &out));
	assert_true(out == 7.0);
}

static void test_known(void **state)
{
	assert_true(units_known("Cel"));
	assert_true(units_known("%RH"));
	assert_true(units_known("kWh"));
	assert_true(units_known("/"));
	assert_false(units_known(""));
	assert_false(units_known("lux"));
	assert_false(units_known(NULL));
}

static void test_special_values(void **state)
{
	double out;

	/* pure arithmetic: no clamping, no surprises */
	assert_true(units_convert(INFINITY, "kW", "W", &out));
	assert_true(isinf(out));
	assert_true(units_convert(NAN, "Cel", "K", &out));
	assert_true(isnan(out));
	assert_true(units_convert(-1e305, "km", "mm", &out));
	assert_true(isinf(out) && out < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_temperature),
		cmocka_unit_test(test_pressure),
		cmocka_unit_test(test_ratio),
		cmocka_unit_test(test_length_power_energy),
		cmocka_unit_test(test_electric_time),
		cmocka_unit_test(test_incompatible),
		cmocka_unit_test(test_unknown),
		cmocka_unit_test(test_known),
		cmocka_unit_test(test_special_values),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
