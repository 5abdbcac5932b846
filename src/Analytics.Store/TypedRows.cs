using System.Collections.Concurrent;
using System.Globalization;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text;

namespace Analytics.Store;

public static class TypedRows
{
    /// <summary>
    /// Runs a query and yields each row as a <typeparamref name="T"/>, read by column name: each column
    /// fills the constructor parameter or settable property of the same name (<c>entity_kind</c> →
    /// <c>EntityKind</c>, case ignored). Columns with no member are ignored; a constructor parameter
    /// with no column is an error naming it. Values convert from the result's .NET types
    /// (see <see cref="QueryResult"/>) to the member's: numbers widen or narrow, enums parse from their
    /// text (<c>brute_force</c> → <c>BruteForce</c>) or number, milliseconds become a
    /// <see cref="TimeSpan"/> when the member is one.
    /// </summary>
    public static async IAsyncEnumerable<T> QueryAsync<T>(this IClickHouseStore store, string sql, QueryParameters? parameters = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var result = await store.QueryAsync(sql, parameters, cancellationToken);
        if (result.Rows.Count == 0)
        {
            yield break;
        }

        var map = RowMap<T>.For(result.Columns);
        foreach (var row in result.Rows)
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return map(row);
        }
    }

    /// <summary>All rows of <see cref="QueryAsync{T}"/> in a list.</summary>
    public static async Task<List<T>> QueryListAsync<T>(this IClickHouseStore store, string sql, QueryParameters? parameters = null, CancellationToken cancellationToken = default)
    {
        var list = new List<T>();
        await foreach (var item in store.QueryAsync<T>(sql, parameters, cancellationToken))
        {
            list.Add(item);
        }

        return list;
    }

    /// <summary>The first row as a <typeparamref name="T"/>, or default when there is none.</summary>
    public static async Task<T?> QueryFirstOrDefaultAsync<T>(this IClickHouseStore store, string sql, QueryParameters? parameters = null, CancellationToken cancellationToken = default)
    {
        await foreach (var item in store.QueryAsync<T>(sql, parameters, cancellationToken))
        {
            return item;
        }

        return default;
    }

    /// <summary>One compiled mapping per record type and column layout.</summary>
    private static class RowMap<T>
    {
        private static readonly ConcurrentDictionary<string, Func<object?[], T>> Maps = new(StringComparer.Ordinal);

        public static Func<object?[], T> For(IReadOnlyList<QueryColumn> columns) =>
            Maps.GetOrAdd(string.Join('\t', columns.Select(c => c.Name)), _ => Build(columns));

        private static Func<object?[], T> Build(IReadOnlyList<QueryColumn> columns)
        {
            var type = typeof(T);
            var ordinals = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
            for (var i = 0; i < columns.Count; i++)
            {
                ordinals.TryAdd(Key(columns[i].Name), i);
            }

            var constructor = type.GetConstructors().OrderByDescending(c => c.GetParameters().Length).FirstOrDefault()
                ?? throw new InvalidOperationException($"{type.Name} has no public constructor to read rows into.");
            var parameters = constructor.GetParameters().Select(p =>
                ordinals.TryGetValue(Key(p.Name!), out var ordinal)
                    ? (Ordinal: ordinal, Type: p.ParameterType)
                    : p.HasDefaultValue
                        ? (Ordinal: -1, Type: p.ParameterType)
                        : throw new InvalidOperationException(
                            $"The query has no column for {type.Name}.{p.Name}; it has {string.Join(", ", columns.Select(c => c.Name))}.")).ToArray();
            var defaults = constructor.GetParameters().Select(p => p.HasDefaultValue ? p.DefaultValue : null).ToArray();
            var bound = new HashSet<string>(constructor.GetParameters().Select(p => Key(p.Name!)), StringComparer.OrdinalIgnoreCase);
            var properties = type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
                .Where(p => p.SetMethod is { IsPublic: true } && !bound.Contains(Key(p.Name)) && ordinals.ContainsKey(Key(p.Name)))
                .Select(p => (Property: p, Ordinal: ordinals[Key(p.Name)]))
                .ToArray();
            return row =>
            {
                var args = new object?[parameters.Length];
                for (var i = 0; i < args.Length; i++)
                {
                    args[i] = parameters[i].Ordinal < 0 ? defaults[i] : ConvertTo(row[parameters[i].Ordinal], parameters[i].Type, columns[parameters[i].Ordinal].Name);
                }

                var item = (T)constructor.Invoke(args);
                foreach (var (property, ordinal) in properties)
                {
                    property.SetValue(item, ConvertTo(row[ordinal], property.PropertyType, columns[ordinal].Name));
                }

                return item;
            };
        }

        // entity_kind, EntityKind and entityKind all name one member.
        private static string Key(string name) => name.Replace("_", "", StringComparison.Ordinal);
    }

    internal static object? ConvertTo(object? value, Type target, string column)
    {
        var underlying = Nullable.GetUnderlyingType(target);
        if (value is null)
        {
            return underlying is not null || !target.IsValueType ? null : Activator.CreateInstance(target);
        }

        var type = underlying ?? target;
        if (type.IsInstanceOfType(value))
        {
            return value;
        }

        try
        {
            if (type.IsEnum)
            {
                return value is string text
                    ? Enum.Parse(type, text.Replace("_", "", StringComparison.Ordinal), ignoreCase: true)
                    : Enum.ToObject(type, System.Convert.ToInt64(value, CultureInfo.InvariantCulture));
            }

            if (type == typeof(Guid))
            {
                return Guid.Parse(System.Convert.ToString(value, CultureInfo.InvariantCulture)!);
            }

            if (type == typeof(TimeSpan))
            {
                return TimeSpan.FromMilliseconds(System.Convert.ToDouble(value, CultureInfo.InvariantCulture));
            }

            if (type == typeof(DateTimeOffset) && value is DateTime dt)
            {
                return new DateTimeOffset(DateTime.SpecifyKind(dt, DateTimeKind.Utc));
            }

            if (type == typeof(string))
            {
                return value is object?[] array ? string.Join(",", array) : System.Convert.ToString(value, CultureInfo.InvariantCulture);
            }

            if (value is object?[] items && (type.IsArray || type.IsGenericType))
            {
                var element = type.IsArray ? type.GetElementType()! : type.GetGenericArguments()[0];
                var converted = Array.CreateInstance(element, items.Length);
                for (var i = 0; i < items.Length; i++)
                {
                    converted.SetValue(ConvertTo(items[i], element, column), i);
                }

                return converted;
            }

            return System.Convert.ChangeType(value, type, CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is FormatException or InvalidCastException or OverflowException or ArgumentException)
        {
            throw new InvalidOperationException(new StringBuilder()
                .Append(CultureInfo.InvariantCulture, $"Column '{column}' holds {value} ({value.GetType().Name}), which does not convert to {type.Name}: {ex.Message}").ToString(), ex);
        }
    }
}
