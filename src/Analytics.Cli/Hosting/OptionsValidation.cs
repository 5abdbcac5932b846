using System.ComponentModel.DataAnnotations;

namespace Analytics.Cli.Hosting;

/// <summary>Checks every options section before anything starts, and reports all problems at once.</summary>
internal static class OptionsValidation
{
    public static IReadOnlyList<string> Errors(params (string Section, object Options)[] sections)
    {
        var errors = new List<string>();
        foreach (var (section, options) in sections)
        {
            var results = new List<ValidationResult>();
            Validator.TryValidateObject(options, new ValidationContext(options), results, validateAllProperties: true);
            foreach (var result in results)
            {
                var members = string.Join(", ", result.MemberNames.Select(m => section + ":" + m));
                errors.Add($"{members}: {result.ErrorMessage}");
            }
        }

        return errors;
    }

    public static void ThrowIfInvalid(params (string Section, object Options)[] sections) => ThrowIfInvalid(Errors(sections));

    /// <summary>One problem: one line. Several: one line each, all at once.</summary>
    public static void ThrowIfInvalid(IEnumerable<string> errors)
    {
        var list = errors.ToList();
        if (list.Count == 1)
        {
            throw new CliException("Invalid configuration: " + list[0], 2);
        }

        if (list.Count > 1)
        {
            throw new CliException("Invalid configuration:\n  " + string.Join("\n  ", list), 2);
        }
    }
}
