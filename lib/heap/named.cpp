// Named objects: an index of (name, object, count, type) entries in a table
// allocated in the heap, found through the name-table slot in the head.
// Every change (create, destroy, growing the table) is one published batch.
#include <cstring>

#include "daxalloc/batch.hpp"
#include "heap/access.hpp"
#include "heap/named.hpp"

namespace daxalloc {
namespace {

struct name_entry {
  std::uint64_t name;    // offset of the NUL-terminated name; 0: free entry
  std::uint64_t object;  // offset of the first object
  std::uint64_t count;
  std::uint64_t type;  // heap::type_tag<T>()
};
struct name_table {
  std::uint64_t capacity;
  std::uint64_t reserved;
  name_entry entries[1];  // capacity of them
};
constexpr std::size_t table_bytes(std::uint64_t capacity) {
  return 16 + capacity * sizeof(name_entry);
}

}  // namespace

namespace {
[[noreturn]] void damaged(const heap& h, const std::string& what) {
  throw error(errc::corrupt, h.media().path().string() + ": the named-object index " + what);
}
// Every offset read from the media is checked against the allocation it names.
name_table* table_of(const heap& h) {
  const std::uint64_t offset = daxalloc::detail::internals(h).names_table_offset();
  if (offset == 0) return nullptr;
  if (offset >= h.size()) damaged(h, "lies outside the heap");
  auto* t = static_cast<name_table*>(h.at(offset));
  const std::size_t room = h.usable_size(t);
  if (room < table_bytes(1) || t->capacity == 0 || t->capacity > (room - 16) / sizeof(name_entry))
    damaged(h, "is not an allocated table of its capacity");
  return t;
}
std::string_view name_of(const heap& h, std::uint64_t offset) {
  if (offset >= h.size()) damaged(h, "names a string outside the heap");
  const auto* text = static_cast<const char*>(h.at(offset));
  const std::size_t room = h.usable_size(text);
  const std::size_t length = room ? strnlen(text, room) : room;
  if (length == room) damaged(h, "names a string that is not allocated and terminated");
  return {text, length};
}
// The entry's objects: `count` of `size` bytes (the type's, once it is
// known to match; 1 before) in the allocation at `object`.
void check_objects(const heap& h, const name_entry& e, std::size_t size) {
  const std::size_t room = e.object < h.size() ? h.usable_size(h.at(e.object)) : 0;
  if (room == 0) damaged(h, "names an object that is not allocated");
  if (e.count == 0 || e.count > room / size)
    damaged(h, "names " + std::to_string(e.count) + " objects of " + std::to_string(size) +
                   " bytes in an allocation of " + std::to_string(room));
}
name_entry* lookup(const heap& h, name_table* t, std::string_view name) {
  if (!t) return nullptr;
  for (std::uint64_t i = 0; i < t->capacity; ++i) {
    name_entry& e = t->entries[i];
    if (!e.name || name_of(h, e.name) != name) continue;
    check_objects(h, e, 1);
    return &e;
  }
  return nullptr;
}
// The entry has the type asked for, and room for its objects of that type.
void check_type(const heap& h, const name_entry& e, std::string_view name, std::uint64_t type,
                std::size_t size) {
  if (e.type != type)
    throw error(errc::invalid_argument,
                "named object '" + std::string(name) + "' has another type");
  check_objects(h, e, size);
}
}  // namespace

void* heap::named_create(std::string_view name, std::uint64_t type, std::size_t size,
                         std::size_t count, bool find_existing,
                         const std::function<void(void*)>& init) {
  if (name.empty() || name.find('\0') != std::string_view::npos)
    throw error(errc::invalid_argument, "named object: a name must be non-empty text without NUL");
  if (count == 0 || size > std::numeric_limits<std::size_t>::max() / count)
    throw error(errc::invalid_argument, "named object '" + std::string(name) + "': bad count");
  std::lock_guard lock(live().names_mutex());
  name_table* t = table_of(*this);
  if (name_entry* e = lookup(*this, t, name)) {
    if (!find_existing)
      throw error(errc::already_exists, "named object '" + std::string(name) + "' exists already");
    check_type(*this, *e, name, type, size);
    return at(e->object);
  }
  batch b(*this);
  void* object = b.reserve(size * count);
  init(object);
  auto* stored = static_cast<char*>(b.reserve(name.size() + 1));
  std::memcpy(stored, name.data(), name.size());
  stored[name.size()] = '\0';
  const name_entry fresh{offset_of(stored), offset_of(object), count, type};
  name_entry* slot = nullptr;
  for (std::uint64_t i = 0; t && i < t->capacity && !slot; ++i)
    if (t->entries[i].name == 0) slot = &t->entries[i];
  if (slot) {
    b.set(&slot->object, fresh.object);
    b.set(&slot->count, fresh.count);
    b.set(&slot->type, fresh.type);
    b.set(&slot->name, fresh.name);
  } else {  // a bigger table, written in place, replaces the old one
    const std::uint64_t capacity = t ? t->capacity * 2 : 16;
    auto* grown = static_cast<name_table*>(b.reserve(table_bytes(capacity)));
    std::memset(grown, 0, table_bytes(capacity));
    grown->capacity = capacity;
    if (t) std::memcpy(grown->entries, t->entries, t->capacity * sizeof(name_entry));
    grown->entries[t ? t->capacity : 0] = fresh;
    // Both copies of the slot, each with its check word (format 3).
    for (int c = 0; c < 2; ++c) {
      sparse::names_slot* copy = live().names_copy(c);
      b.set(&copy->offset, offset_of(grown));
      b.set(&copy->check, sparse::names_slot_check(offset_of(grown)));
    }
    if (t) b.defer_free(t);
  }
  b.publish();
  return object;
}

std::pair<void*, std::size_t> heap::named_find(std::string_view name, std::uint64_t type,
                                               std::size_t size) const {
  std::lock_guard lock(live().names_mutex());
  const name_entry* e = lookup(*this, table_of(*this), name);
  if (!e) return {nullptr, 0};
  check_type(*this, *e, name, type, size);
  return {at(e->object), e->count};
}

bool heap::named_destroy(std::string_view name, std::uint64_t type, std::size_t size,
                         const std::function<void(void*, std::size_t)>& fini) {
  std::lock_guard lock(live().names_mutex());
  name_entry* e = lookup(*this, table_of(*this), name);
  if (!e) return false;
  check_type(*this, *e, name, type, size);
  fini(at(e->object), e->count);
  batch b(*this);
  b.defer_free(at(e->object));
  b.defer_free(at(e->name));
  b.set(&e->name, 0);
  b.set(&e->object, 0);
  b.set(&e->count, 0);
  b.set(&e->type, 0);
  b.publish();
  return true;
}

std::vector<heap::named_object> heap::named_objects() const {
  std::lock_guard lock(live().names_mutex());
  std::vector<named_object> out;
  if (const name_table* t = table_of(*this))
    for (std::uint64_t i = 0; i < t->capacity; ++i)
      if (t->entries[i].name) {
        check_objects(*this, t->entries[i], 1);
        out.push_back({std::string(name_of(*this, t->entries[i].name)), at(t->entries[i].object),
                       t->entries[i].count});
      }
  return out;
}

namespace detail {
std::vector<std::pair<std::uint64_t, object_kind>> named_allocations(const heap& h) {
  std::lock_guard lock(heap_access::impl(h).names_mutex());
  std::vector<std::pair<std::uint64_t, object_kind>> out;
  const name_table* t = table_of(h);
  if (t == nullptr) return out;
  out.emplace_back(h.offset_of(t), object_kind::name_index);
  for (std::uint64_t i = 0; i < t->capacity; ++i)
    if (const name_entry& e = t->entries[i]; e.name) {
      (void)name_of(h, e.name);  // checks it
      check_objects(h, e, 1);
      out.emplace_back(e.name, object_kind::name_index);
      out.emplace_back(e.object, object_kind::named);
    }
  return out;
}
}  // namespace detail

}  // namespace daxalloc
