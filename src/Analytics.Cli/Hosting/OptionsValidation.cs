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

    public static void ThrowIfInvalid(params (string Section, object Options)[] sections)
    {
        var errors = Errors(sections);
        if (errors.Count > 0)
        {
            throw new CliException("Invalid configuration:\n  " + string.Join("\n  ", errors), 2);
        }
    }
}
