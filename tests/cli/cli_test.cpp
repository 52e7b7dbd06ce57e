// The plumbing of the daxalloc tool (tools/cli.hpp): arguments, sizes, text
// for humans, JSON. The subcommands themselves are run by cli_test.sh.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "cli.hpp"

using namespace daxalloc::cli;

namespace {

const command_spec spec{
    "create",
    {"PATH"},
    "PATH --size SIZE [--force] [--json]",
    "summary",
    "Create a heap.\n",
    {{"size", "SIZE", "bytes present"}, {"force", "", "overwrite"}, {"json", "", "JSON"}}};

parsed_args parse(std::vector<std::string> args) {
  return parse_args(spec, args);
}

}  // namespace

TEST_CASE("sizes: plain bytes and binary suffixes") {
  CHECK(parse_size("4096") == 4096u);
  CHECK(parse_size("64K") == 64u << 10);
  CHECK(parse_size("64k") == 64u << 10);
  CHECK(parse_size("64KiB") == 64u << 10);
  CHECK(parse_size("2M") == 2u << 20);
  CHECK(parse_size("2MB") == 2u << 20);
  CHECK(parse_size("1G") == 1u << 30);
  CHECK(parse_size("1T") == std::uint64_t{1} << 40);
  CHECK(parse_size("7B") == 7u);
  CHECK(parse_size("15E") == std::uint64_t{15} << 60);
  CHECK_FALSE(parse_size("16E"));  // overflow
  CHECK_FALSE(parse_size("99999999999999999999"));
  CHECK_FALSE(parse_size(""));
  CHECK_FALSE(parse_size("M"));
  CHECK_FALSE(parse_size("12X"));
  CHECK_FALSE(parse_size("1.5G"));
  CHECK_FALSE(parse_size("-1M"));
  CHECK_FALSE(parse_size("1Mx"));
  CHECK_FALSE(parse_size(" 1M"));
  CHECK_FALSE(parse_size("0"));
  CHECK(parse_size("0", true) == 0u);
  CHECK(parse_uint("30") == 30u);
  CHECK_FALSE(parse_uint("3O"));
  CHECK_FALSE(parse_uint("18446744073709551616"));
}

TEST_CASE("text for humans: units, hex, percentages, tables") {
  CHECK(human_bytes(0) == "0 B");
  CHECK(human_bytes(1023) == "1023 B");
  CHECK(human_bytes(4096) == "4 KiB");
  CHECK(human_bytes(3 << 20) == "3 MiB");
  CHECK(human_bytes((3 << 20) / 2) == "1536 KiB");
  CHECK(human_bytes(1100u << 20) == "1100 MiB");
  CHECK(human_bytes(std::uint64_t{10000} << 20) == "9.77 GiB");
  CHECK(human_bytes(12345) == "12.06 KiB");
  CHECK(human_bytes(9999) == "9999 B");
  CHECK(human_bytes(std::uint64_t{1} << 40) == "1 TiB");
  CHECK(human_bytes(~std::uint64_t{0}) == "16.00 EiB");
  CHECK(hex(0) == "0x0");
  CHECK(hex(0x8000000) == "0x8000000");
  CHECK(span_text(0, 0x200000) == "[0x0, 0x200000)");
  CHECK(percent(0.125) == "12.5 %");
  CHECK(percent(0) == "0.0 %");

  table t({"name", "size"}, {false, true});
  t.add({"a", "1 B"});
  t.add({"longer", "10 MiB"});
  CHECK(t.render() ==
        "  name      size\n"
        "  a          1 B\n"
        "  longer  10 MiB\n");
}

TEST_CASE("arguments: options, values, flags, positionals") {
  auto a = parse({"/dev/shm/h", "--size", "64M", "--force"});
  CHECK(a.positionals == std::vector<std::string>{"/dev/shm/h"});
  CHECK(a.value("size") == "64M");
  CHECK(a.flag("force"));
  CHECK_FALSE(a.flag("json"));
  CHECK_FALSE(a.value("max-size"));

  a = parse({"--size=1G", "--", "--odd-name"});
  CHECK(a.value("size") == "1G");
  CHECK(a.positionals == std::vector<std::string>{"--odd-name"});

  a = parse({"-"});  // a lone dash is an argument
  CHECK(a.positionals == std::vector<std::string>{"-"});

  CHECK(parse({"--help"}).help);
  CHECK(parse({"-h", "extra", "args"}).help);  // help is not held up by other mistakes

  CHECK_THROWS_AS(parse({}), usage_error);                                     // missing PATH
  CHECK_THROWS_AS(parse({"a", "b"}), usage_error);                             // one too many
  CHECK_THROWS_AS(parse({"a", "--bogus"}), usage_error);                       // unknown
  CHECK_THROWS_AS(parse({"a", "-x"}), usage_error);                            // unknown short
  CHECK_THROWS_AS(parse({"a", "--size"}), usage_error);                        // value missing
  CHECK_THROWS_AS(parse({"a", "--force=yes"}), usage_error);                   // flag with value
  CHECK_THROWS_AS(parse({"a", "--size", "1M", "--size", "2M"}), usage_error);  // twice
  CHECK_THROWS_AS(parse({"a", "--json", "--json"}), usage_error);
  try {
    (void)parse({});
  } catch (const usage_error& e) {
    CHECK(std::string(e.what()) == "missing PATH");
  }

  const std::string help = command_help(spec);
  CHECK(help.starts_with("usage: daxalloc create PATH --size SIZE [--force] [--json]\n"));
  CHECK(help.find("  --size SIZE  bytes present\n") != std::string::npos);
  CHECK(help.find("  -h, --help   show this help\n") != std::string::npos);
}

TEST_CASE("json: escaping, including bytes that are not UTF-8") {
  CHECK(json_escape("plain") == "plain");
  CHECK(json_escape("a\"b\\c") == "a\\\"b\\\\c");
  CHECK(json_escape("tab\there\nnew") == "tab\\there\\nnew");
  CHECK(json_escape(std::string("nul\0x", 5)) == "nul\\u0000x");
  CHECK(json_escape("\x1f") == "\\u001f");
  CHECK(json_escape("caf\xc3\xa9") == "caf\xc3\xa9");            // valid UTF-8 stays
  CHECK(json_escape("\xe2\x82\xac") == "\xe2\x82\xac");          // euro sign
  CHECK(json_escape("\xf0\x9f\x98\x80") == "\xf0\x9f\x98\x80");  // outside the BMP
  CHECK(json_escape("bad\xff") == "bad\\ufffd");
  CHECK(json_escape("\xc3") == "\\ufffd");                        // truncated sequence
  CHECK(json_escape("\xc0\xaf") == "\\ufffd\\ufffd");             // overlong
  CHECK(json_escape("\xed\xa0\x80") == "\\ufffd\\ufffd\\ufffd");  // a surrogate
}

TEST_CASE("json: the writer places commas, indentation and one-line levels") {
  json_writer w;
  w.begin_object()
      .field("name", "h\"1")
      .field("size", std::uint64_t{1} << 40)
      .field("node", -1)
      .field("ok", true)
      .field("ratio", 0.25)
      .key("empty")
      .begin_array()
      .end_array()
      .key("pairs")
      .begin_array();
  w.begin_object(true).field("a", 1).field("b", 2).end_object();
  w.begin_object(true).field("a", 3).field("b", 4).end_object();
  w.end_array().key("list").begin_array(true).value(1).value("x").null().end_array();
  w.end_object();
  CHECK(w.str() ==
        "{\n"
        "  \"name\": \"h\\\"1\",\n"
        "  \"size\": 1099511627776,\n"
        "  \"node\": -1,\n"
        "  \"ok\": true,\n"
        "  \"ratio\": 0.25,\n"
        "  \"empty\": [],\n"
        "  \"pairs\": [\n"
        "    {\"a\": 1, \"b\": 2},\n"
        "    {\"a\": 3, \"b\": 4}\n"
        "  ],\n"
        "  \"list\": [1, \"x\", null]\n"
        "}\n");

  json_writer n;
  n.begin_array(true).value(0.0 / 0.0).end_array();  // NaN is no JSON number
  CHECK(n.str() == "[null]\n");
}

TEST_CASE("progress: silent when stderr is not a terminal or when disabled") {
  progress off("quiet", false);
  CHECK_FALSE(off.active());
}
