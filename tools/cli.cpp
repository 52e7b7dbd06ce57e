#include "cli.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

namespace daxalloc::cli {

// ---- arguments ----

bool parsed_args::flag(std::string_view name) const {
  return std::find(flags.begin(), flags.end(), name) != flags.end();
}

std::optional<std::string> parsed_args::value(std::string_view name) const {
  if (auto it = values.find(name); it != values.end()) return it->second;
  return std::nullopt;
}

parsed_args parse_args(const command_spec& spec, std::span<const std::string> args) {
  parsed_args out;
  const auto find = [&](std::string_view name) -> const option_spec* {
    for (const auto& o : spec.options)
      if (o.name == name) return &o;
    return nullptr;
  };
  bool only_positionals = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (only_positionals || arg.size() < 2 || arg[0] != '-') {  // "-" alone is an argument
      out.positionals.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positionals = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      out.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) throw usage_error("unknown option '" + arg + "'");
    std::string name = arg.substr(2);
    std::optional<std::string> attached;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      attached = name.substr(eq + 1);
      name.resize(eq);
    }
    const option_spec* option = find(name);
    if (option == nullptr) throw usage_error("unknown option '--" + name + "'");
    if (option->value_name.empty()) {
      if (attached) throw usage_error("option '--" + name + "' takes no value");
      if (out.flag(name)) throw usage_error("option '--" + name + "' given twice");
      out.flags.push_back(name);
      continue;
    }
    if (out.values.count(name)) throw usage_error("option '--" + name + "' given twice");
    if (!attached && i + 1 >= args.size())
      throw usage_error("option '--" + name + "' needs a value (" +
                        std::string(option->value_name) + ")");
    out.values.emplace(name, attached ? *attached : args[++i]);
  }
  if (!out.help) {
    if (out.positionals.size() < spec.positionals.size())
      throw usage_error("missing " + std::string(spec.positionals[out.positionals.size()]));
    if (out.positionals.size() > spec.positionals.size())
      throw usage_error("unexpected argument '" + out.positionals[spec.positionals.size()] + "'");
  }
  return out;
}

std::string command_help(const command_spec& spec) {
  std::string out = "usage: daxalloc " + std::string(spec.name);
  if (!spec.synopsis.empty()) out += " " + std::string(spec.synopsis);
  out += "\n\n" + std::string(spec.description);
  if (!out.ends_with('\n')) out += '\n';
  out += "\noptions:\n";
  std::vector<std::pair<std::string, std::string_view>> rows;
  for (const auto& o : spec.options)
    rows.emplace_back(
        "--" + std::string(o.name) + (o.value_name.empty() ? "" : " " + std::string(o.value_name)),
        o.help);
  rows.emplace_back("-h, --help", "show this help");
  std::size_t width = 0;
  for (const auto& [left, help] : rows) width = std::max(width, left.size());
  for (const auto& [left, help] : rows)
    out += "  " + left + std::string(width - left.size() + 2, ' ') + std::string(help) + "\n";
  return out;
}

// ---- sizes and numbers ----

std::optional<std::uint64_t> parse_uint(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (v > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return std::nullopt;
    v = v * 10 + digit;
  }
  return v;
}

std::optional<std::uint64_t> parse_size(std::string_view text, bool allow_zero) {
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  const auto number = parse_uint(text.substr(0, digits));
  if (!number) return std::nullopt;
  std::string suffix;
  for (char c : text.substr(digits))
    suffix += static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
  unsigned shift = 0;
  if (!suffix.empty() && suffix != "B") {
    static constexpr std::string_view units = "KMGTPE";
    const auto at = units.find(suffix[0]);
    if (at == std::string_view::npos) return std::nullopt;
    const std::string_view rest = std::string_view(suffix).substr(1);
    if (!rest.empty() && rest != "IB" && rest != "B") return std::nullopt;
    shift = 10 * static_cast<unsigned>(at + 1);
  }
  if (shift && *number > (std::numeric_limits<std::uint64_t>::max() >> shift)) return std::nullopt;
  const std::uint64_t bytes = *number << shift;
  if (bytes == 0 && !allow_zero) return std::nullopt;
  return bytes;
}

// ---- text for humans ----

std::string human_bytes(std::uint64_t bytes) {
  static constexpr std::array<const char*, 7> units = {"B",   "KiB", "MiB", "GiB",
                                                       "TiB", "PiB", "EiB"};
  // An exact count in the largest unit that keeps it short ("1100 MiB"), else
  // two decimals in the largest unit not above the value ("246.08 MiB").
  if (bytes == 0) return "0 B";
  for (std::size_t u = units.size(); u-- > 0;) {
    const std::uint64_t unit = std::uint64_t{1} << (10 * u);
    if (bytes % unit == 0 && bytes / unit < 10000)
      return std::to_string(bytes / unit) + " " + units[u];
  }
  std::size_t u = 0;
  while (u + 1 < units.size() && bytes >> (10 * (u + 1)) != 0) ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s",
                static_cast<double>(bytes) / static_cast<double>(std::uint64_t{1} << (10 * u)),
                units[u]);
  return buf;
}

std::string hex(std::uint64_t value) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(value));
  return buf;
}

std::string percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %%", std::isfinite(fraction) ? fraction * 100 : 0.0);
  return buf;
}

std::string span_text(std::uint64_t start, std::uint64_t end) {
  return "[" + hex(start) + ", " + hex(end) + ")";
}

table::table(std::vector<std::string> header, std::vector<bool> right_aligned)
    : right_(std::move(right_aligned)) {
  right_.resize(header.size(), false);
  rows_.push_back(std::move(header));
}

void table::add(std::vector<std::string> row) {
  row.resize(rows_.front().size());
  rows_.push_back(std::move(row));
}

std::string table::render(std::string_view indent) const {
  std::vector<std::size_t> width(rows_.front().size(), 0);
  for (const auto& row : rows_)
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  std::string out;
  for (const auto& row : rows_) {
    std::string line(indent);
    for (std::size_t c = 0; c < row.size(); ++c) {
      const std::string pad(width[c] - row[c].size(), ' ');
      const bool last = c + 1 == row.size();
      line += right_[c] ? pad + row[c] : row[c] + (last ? "" : pad);
      if (!last) line += "  ";
    }
    while (line.ends_with(' ')) line.pop_back();
    out += line + "\n";
  }
  return out;
}

// ---- json ----

namespace {

// Length of the valid UTF-8 sequence at text[i], or 0 when it is not one.
std::size_t utf8_sequence(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xbf;  // allowed range of the second byte
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) {
    n = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    n = 3;
    if (lead == 0xe0) lo = 0xa0;  // overlong
    if (lead == 0xed) hi = 0x9f;  // surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    n = 4;
    if (lead == 0xf0) lo = 0x90;  // overlong
    if (lead == 0xf4) hi = 0x8f;  // beyond U+10FFFF
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
  return n;
}

}  // namespace

std::string json_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else if (const std::size_t n = utf8_sequence(text, i); n == 0) {
          out += "\\ufffd";  // not UTF-8: JSON cannot carry the raw byte
        } else {
          out.append(text.substr(i, n));
          i += n;
          continue;
        }
    }
    ++i;
  }
  return out;
}

void json_writer::newline() {
  out_ += '\n';
  out_.append(2 * stack_.size(), ' ');
}

// Before a key of an object or a value of an array: the comma and the
// line break (or space) that separate it from the previous one.
void json_writer::before_value() {
  if (stack_.empty()) return;
  if (after_key_) {
    after_key_ = false;
    return;
  }
  level& l = stack_.back();
  if (l.count++) out_ += ',';
  if (!l.on_one_line)
    newline();
  else if (l.count > 1)
    out_ += ' ';
}

json_writer& json_writer::raw(std::string_view token) {
  before_value();
  out_ += token;
  return *this;
}

json_writer& json_writer::begin_object(bool on_one_line) {
  before_value();
  out_ += '{';
  stack_.push_back({true, on_one_line || (!stack_.empty() && stack_.back().on_one_line), 0});
  return *this;
}

json_writer& json_writer::begin_array(bool on_one_line) {
  before_value();
  out_ += '[';
  stack_.push_back({false, on_one_line || (!stack_.empty() && stack_.back().on_one_line), 0});
  return *this;
}

json_writer& json_writer::close_level(char bracket) {
  const level l = stack_.back();
  stack_.pop_back();
  if (l.count && !l.on_one_line) newline();
  out_ += bracket;
  return *this;
}

json_writer& json_writer::end_object() {
  return close_level('}');
}

json_writer& json_writer::end_array() {
  return close_level(']');
}

json_writer& json_writer::key(std::string_view name) {
  before_value();
  out_ += '"';
  out_ += json_escape(name);
  out_ += "\": ";
  after_key_ = true;
  return *this;
}

json_writer& json_writer::value(std::string_view text) {
  before_value();
  out_ += '"';
  out_ += json_escape(text);
  out_ += '"';
  return *this;
}

json_writer& json_writer::value(bool b) {
  return raw(b ? "true" : "false");
}

json_writer& json_writer::value(double d) {
  if (!std::isfinite(d)) return null();
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", d);
  return raw(buf);
}

std::string json_writer::str() const {
  return out_ + "\n";
}

// ---- progress ----

progress::progress(std::string label, bool enabled) : label_(std::move(label)) {
  if (!enabled || isatty(STDERR_FILENO) != 1) return;
  draw(0, 0);  // at once, so that even a short operation is seen to have started
  thread_ = std::thread([this] { run(); });
}

progress::~progress() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    done_ = true;
  }
  wake_.notify_all();
  thread_.join();
  std::fputs("\r\033[K", stderr);  // erase the line: what follows starts clean
  std::fflush(stderr);
}

void progress::draw(unsigned frame, double seconds) const {
  static constexpr char frames[] = {'|', '/', '-', '\\'};
  std::fprintf(stderr, "\r%s ... %c %.1f s", label_.c_str(), frames[frame % 4], seconds);
  std::fflush(stderr);
}

void progress::run() {
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock lock(mutex_);
  for (unsigned frame = 1;; ++frame) {
    if (wake_.wait_for(lock, std::chrono::milliseconds(100), [this] { return done_; })) return;
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    draw(frame, elapsed.count());
  }
}

}  // namespace daxalloc::cli
