"""What every layer uses: errors, the input-Jacobian engine, perturbations, score transforms, torch
support, text escaping."""
